"""Arguments several commands share: ``--set PREFIX.KEY=VALUE`` options, the file of a ``--model``
(an input no output may replace) and the output options (``--out``, ``--plot``, ``--video``)."""

from __future__ import annotations

import argparse

from gndesign.errors import GndesignError

OUTPUTS = ("--out", "--plot", "--video")


def prefixed_options(items: list[str] | None, prefix: str, example: str, others: tuple[str, ...] = ()) -> dict:
    """``--set PREFIX.KEY=VALUE`` options as ``{KEY: value}`` (values parsed as YAML scalars); items
    with one of the ``others`` prefixes belong to another group and are skipped."""
    from gndesign.config import parse_value

    options = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if key.split(".", 1)[0] in others and "." in key and value:
            continue
        if not key.startswith(prefix + ".") or not value:
            forms = " or ".join(f"{p}.KEY=VALUE" for p in (prefix, *others))
            raise GndesignError(f"--set {item!r} must look like {forms} (e.g. {prefix}.{example})")
        options[key.split(".", 1)[1]] = parse_value(value)
    return options


def model_path(model: str | None) -> str | None:
    """The file of a ``--model`` (a path or ``pretrained:NAME``; None for ``mujoco``), an input that
    no output may replace."""
    if model is None or model == "mujoco":
        return None
    from gndesign.checkpoints import resolve_checkpoint

    return str(resolve_checkpoint(model))


def check_outputs(args: argparse.Namespace, inputs: list, kind: str = "file", own: str | None = None) -> None:
    """The command's output options checked before it computes (:func:`gndesign.io.check_outputs`;
    ``args.overwrite``, where the command has it, allows datasets, run directories, checkpoints)."""
    from gndesign.io import check_outputs as check

    check({f: getattr(args, f[2:], None) for f in OUTPUTS}, inputs, getattr(args, "overwrite", None), kind, own)


def output_options(s: argparse.ArgumentParser, plot_help: str) -> None:
    """``--plot PNG``, ``--out JSON`` (all results) and ``--json`` (print JSON)."""
    s.add_argument("--plot", help=plot_help)
    s.add_argument("--out", help="also write the results as JSON to this file")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    overwrite_option(s)


def overwrite_option(s: argparse.ArgumentParser) -> None:
    s.add_argument("--overwrite", action="store_true",
                   help="allow writing into a dataset or training run directory, or over a checkpoint (never over "
                        "an input of the command)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
