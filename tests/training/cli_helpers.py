"""What the CLI tests share: running ``tfvqvae`` in-process and reading its one-line error."""

from tfvqvae_cli import main


def one_line_error(argv, capsys):
    """``(exit status, the single stderr line)`` of a refused ``tfvqvae`` command."""
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return code, lines[0]


def refused(argv, capsys):
    """The one stderr line of a command that must exit with status 2."""
    code, line = one_line_error(argv, capsys)
    assert code == 2, line
    return line
