"""A `PixelCNNPrior` evaluated one position at a time, with cached activations.

The machinery shared by the cached and compiled samplers
(`tfvqvae.models.sampling.cached_sampler`) and the image codec
(`tfvqvae.codec`), which needs the same distributions on both sides of a
file: the encoder feeds an image's own codes, the decoder the codes it has
just decoded, and both compute p(z_ij | z_<ij [, class] [, z_above]) through
the same three functions.

Per raster position (i, j), in order:

1. `IncrementalPrior.logits`: every gated block's horizontal stack advances
   by one position (one matrix product with the mask's visible taps,
   `GatedBlock.horizontal_kernel`, then the gates; each attention block adds
   the position's key and value to its caches and attends over them,
   `CausalSelfAttention.step`), and the head gives float32 logits (B, K) of
   z_ij given everything before it.
2. `IncrementalPrior.write`: the code chosen for (i, j) (sampled, or the
   image's own when encoding, or decoded) enters the first block's input row.
3. at the end of a row, `IncrementalPrior.end_row`: the vertical stacks,
   which see whole rows, advance by one row.

A prior over codes with a depth axis (``code_shape`` (H, W, Q)) takes step 1
in two parts: `IncrementalPrior.features` advances the stacks to (i, j), then
`IncrementalPrior.choose` gives the logits of the Q codes there one depth at
a time, each given the codes chosen at the depths before it
(`PixelCNNPrior.depth_step_logits`); `write` then takes the position's (B, Q)
codes. `choose` also serves priors without a depth axis.

The logits equal those of the prior's full forward pass at (i, j) given the
same codes, up to float rounding (Ramachandran et al. 2017, "Fast Generation
for Convolutional Autoregressive Models", https://arxiv.org/abs/1704.06001).

The state is a dict of tensors (a nest, so ``tf.while_loop`` and
``tf.function`` take it as it is):

* ``"h_rows"``: per block, (c + W, B, p) its horizontal input on the current
  row, c zero columns first (c = kernel_size // 2);
* ``"v_windows"``: per block, (B, c + 1, W + 2c, p) the last c + 1 rows of
  its vertical input, zero padded by c columns each side;
* ``"v_to_h"``: per block, (B, W, 2p) Dense(v) of the row above;
* ``"caches"``: per attention block, its (keys, values), each (H·W, B, n, d).

The context (`IncrementalPrior.context`) holds what does not change while a
map is drawn: per block the conditioning terms of every position (class and
code map above), and the horizontal kernels.
"""

import tensorflow as tf

__all__ = ["IncrementalPrior"]


class IncrementalPrior:
    """The cached path of a `PixelCNNPrior`: logits of one position at a time.

    Args:
        prior: a built `PixelCNNPrior`.

    Example (teacher forcing: the logits of an image's own codes)::

        step = IncrementalPrior(prior)
        context = step.context(batch, labels, condition)
        state = step.start(batch)
        for i in range(h):
            for j in range(w):
                logits, state = step.logits(context, state, i, j)  # (B, K)
                state = step.write(state, j, codes[:, i, j])
            state = step.end_row(context, state, i)
    """

    def __init__(self, prior):
        self.prior = prior
        self.height, self.width = (int(s) for s in prior.map_shape)
        self.depth = prior.code_depth
        self.c = prior.kernel_size // 2
        self.p = prior.hidden_channels
        self.blocks = prior.blocks
        self.attention = prior.attention  # {block index: CausalSelfAttention}
        self.slot = {l: a for a, l in enumerate(self.attention)}  # block -> its cache pair
        self.dtype = prior.compute_dtype  # activations (float16 under mixed precision)

    # ----------------------------------------------------------------- setup
    def context(self, batch, labels=None, condition=None):
        """What stays fixed while one batch of maps is drawn.

        Args:
            batch: B, an int or an int32 scalar tensor.
            labels: int32 (B,) classes, read when the prior is class-conditional.
            condition: int32 (B, h', w') code map of the level above, read
                when the prior is conditioned on one.

        Returns:
            dict: ``"c_v"`` per block (H, B, W, 2p) and ``"c_h"`` per block
            (H, W, B, 2p) conditioning terms; ``"kernels"`` per block the
            horizontal kernel (columns, p, 2p) and bias (2p,).
        """
        prior, p = self.prior, self.p
        labels = labels if prior.num_classes is not None else None
        features = prior.condition_features(condition) if prior.is_conditioned else None
        c_v, c_h = [], []
        full = [batch, self.height, self.width, 2 * p]
        for block in self.blocks:
            bias_v, bias_h = block.condition_biases(labels, features)
            c_v.append(tf.transpose(tf.broadcast_to(bias_v, full), [1, 0, 2, 3]))
            c_h.append(tf.transpose(tf.broadcast_to(bias_h, full), [1, 2, 0, 3]))
        return {
            "c_v": c_v,
            "c_h": c_h,
            "kernels": [block.horizontal_kernel() for block in self.blocks],
        }

    def empty_rows(self, batch):
        """Per block a zero (c + W, B, p) horizontal input row."""
        return [tf.zeros([self.c + self.width, batch, self.p], self.dtype) for _ in self.blocks]

    def start(self, batch):
        """The state before position (0, 0): zero rows, zero windows, empty caches.

        Row 0 sees the vertical stack of an all-zero row above (the shift down).
        """
        c, p = self.c, self.p
        return {
            "h_rows": self.empty_rows(batch),
            "v_windows": [tf.zeros([batch, c + 1, self.width + 2 * c, p], self.dtype)
                          for _ in self.blocks],
            "v_to_h": [block.v_to_h(tf.zeros([batch, self.width, 2 * p], self.dtype))
                       for block in self.blocks],
            "caches": [list(layer.empty_cache(batch)) for layer in self.attention.values()],
        }

    # ----------------------------------------------------------------- steps
    def logits(self, context, state, i, j):
        """float32 logits (B, K) of z_ij, and the state with (i, j) computed.

        ``i``, ``j``: int32 scalars (Python ints or tensors). The state's
        first row does not yet hold z_ij: `write` puts it there. For a prior
        without a depth axis (with one: `features` and `choose`).
        """
        if self.depth is not None:
            raise ValueError(
                "This prior's positions hold several codes (code_shape "
                f"{tuple(self.prior.code_shape)}): use `features` and `choose`.")
        skip, state = self.features(context, state, i, j)
        return tf.cast(self.prior.head(skip), tf.float32), state

    def choose(self, context, state, i, j, pick):
        """The codes of (i, j), their logits and the state with (i, j) computed.

        ``pick(logits, q)`` gets float32 logits (B, K) of depth ``q`` (a
        Python int; None for a prior without a depth axis) given the codes it
        picked at the depths before, and returns the int32 (B,) codes chosen
        there (sampled, or an image's own). Returns (codes int32 (B,) or
        (B, Q), logits float32 (B, K) or (B, Q, K), state); `write` then
        puts the codes in the state.
        """
        skip, state = self.features(context, state, i, j)
        if self.depth is None:
            logits = tf.cast(self.prior.head(skip), tf.float32)
            return pick(logits, None), logits, state
        before = tf.zeros_like(skip)
        codes, logits = [], []
        for q in range(self.depth):
            logits.append(self.prior.depth_step_logits(skip, q, before))
            codes.append(tf.cast(pick(logits[-1], q), tf.int32))
            if q + 1 < self.depth:
                before = before + self.prior.depth_code_features(q, codes[-1])
        return tf.stack(codes, axis=-1), tf.stack(logits, axis=1), state

    def features(self, context, state, i, j):
        """The summed skips (B, p) at (i, j) and the state with (i, j) computed."""
        c, width = self.c, self.width
        rows, caches = list(state["h_rows"]), [list(pair) for pair in state["caches"]]
        skip = 0.0
        for l, block in enumerate(self.blocks):
            row = rows[l]  # (c + W, B, p): block l's input on row i, c zeros first
            kernel, bias = context["kernels"][l]
            columns = kernel.shape[0]  # the inputs at columns j - c .. j (- 1)
            if columns:
                window = tf.slice(row, [j, 0, 0], [columns, -1, -1])
                h = tf.einsum("wbc,wcf->bf", window, kernel) + bias
            else:  # k = 1, mask "A": the bias alone
                h = tf.broadcast_to(bias, [tf.shape(row)[1], 2 * self.p])
            h_out, s = block.horizontal_gate(
                h, row[c + j], state["v_to_h"][l][:, j], context["c_h"][l][i, j])
            skip = skip + s
            if l in self.attention:
                a = self.slot[l]
                h_out, *caches[a] = self.attention[l].step(h_out, i * width + j, *caches[a])
            if h_out is not None:  # None after the last block
                rows[l + 1] = tf.tensor_scatter_nd_update(rows[l + 1], [[c + j]], h_out[None])
        return skip, {**state, "h_rows": rows, "caches": caches}

    def write(self, state, j, code):
        """The state with int32 (B,) (or (B, Q)) ``code`` at column ``j`` of the current row."""
        rows = list(state["h_rows"])
        rows[0] = tf.tensor_scatter_nd_update(
            rows[0], [[self.c + j]], self.prior.embed_codes(code)[None])
        return {**state, "h_rows": rows}

    def end_row(self, context, state, i):
        """The state for row i + 1, once row i is complete.

        Every vertical stack advances by one row (`GatedBlock.vertical_row`)
        and the horizontal rows start empty.
        """
        c = self.c
        rows = state["h_rows"]
        v_in = tf.transpose(rows[0][c:], [1, 0, 2])  # the row's embeddings (B, W, p)
        windows, v_to_h = [], []
        for l, block in enumerate(self.blocks):
            padded = tf.pad(v_in, [[0, 0], [c, c], [0, 0]])[:, None]
            window = tf.concat([state["v_windows"][l][:, 1:], padded], axis=1)
            v_in, v_to_h_row = block.vertical_row(window, context["c_v"][l][i])
            windows.append(window)
            v_to_h.append(v_to_h_row)
        batch = tf.shape(rows[0])[1]
        return {**state, "h_rows": self.empty_rows(batch), "v_windows": windows,
                "v_to_h": v_to_h}
