"""The seeds' evaluations of a trained run (VQ-VAE-2, Razavi et al. 2019, §5).

* `cas`, `classifier`: the Classification Accuracy Score (Ravuri & Vinyals
  2019): a fixed classifier trained on image–class pairs (real, reconstructed
  or generated), tested on real test images; top-1 and top-5 accuracy.
* `rate_distortion`: every prior's NLL in bits per code and bits per image,
  the decoder's MSE and PSNR, the total rate beside the naive Σ h·w·log2 K
  (Table 1 of VQ-VAE-2).
* `usage`: per-level codebook-usage counts, histograms (PNG, TensorBoard).

``tfvqvae evaluate --run DIR`` (`tfvqvae.training.evaluate`) runs them all on
a run folder.
"""

from tfvqvae.evaluation.cas import balanced_labels
from tfvqvae.evaluation.cas import balanced_subset
from tfvqvae.evaluation.cas import classification_accuracy_score
from tfvqvae.evaluation.cas import top_k_accuracy
from tfvqvae.evaluation.classifier import build_classifier
from tfvqvae.evaluation.classifier import train_classifier
from tfvqvae.evaluation.rate_distortion import decoder_distortion
from tfvqvae.evaluation.rate_distortion import naive_bits_per_image
from tfvqvae.evaluation.rate_distortion import prior_bits_per_image
from tfvqvae.evaluation.rate_distortion import prior_rate
from tfvqvae.evaluation.rate_distortion import rate_distortion
from tfvqvae.evaluation.usage import code_counts
from tfvqvae.evaluation.usage import usage_summary
from tfvqvae.evaluation.usage import write_usage_histograms

__all__ = [
    "balanced_labels",
    "balanced_subset",
    "build_classifier",
    "classification_accuracy_score",
    "code_counts",
    "decoder_distortion",
    "naive_bits_per_image",
    "prior_bits_per_image",
    "prior_rate",
    "rate_distortion",
    "top_k_accuracy",
    "train_classifier",
    "usage_summary",
    "write_usage_histograms",
]
