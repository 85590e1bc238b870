"""The PaddleClas commands: ``prodrec convert-paddle`` (weights) and ``prodrec export-config`` (configs).

Heavy libraries load inside the handlers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict

__all__ = ["add_commands"]


def add_commands(commands: "argparse._SubParsersAction") -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``convert-paddle`` and ``export-config`` to a ``prodrec`` subparsers object.

    Returns:
        ``{command: handler}``.
    """
    convert = commands.add_parser("convert-paddle", help="PaddleClas ResNet50_vd .pdparams -> a prodrec model file")
    convert.add_argument("input", metavar="IN.pdparams", help="RecModel or ImageNet ResNet50_vd weights")
    convert.add_argument("output", metavar="OUT.pt", help="where to write the Embedder (load with Embedder.load)")

    export = commands.add_parser("export-config", help="write the prodrec config a PaddleClas config translates to")
    export.add_argument("config", metavar="PPCLS.yaml", help="a PaddleClas config")
    export.add_argument("--output", metavar="NATIVE.yaml", help="file to write (default: print the config)")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="Section.key=value",
                        help="override a key of the PaddleClas config before translating; repeatable")
    return {"convert-paddle": _convert_paddle, "export-config": _export_config}


def _convert_paddle(args: argparse.Namespace) -> int:
    from prodrec.paddle import load_paddleclas

    model, info = load_paddleclas(args.input)
    model.save(args.output)
    neck = (f"its {info['embedding_size']}-d neck" if info["embedding_size"]
            else f"a new {model.embedding_size}-d neck (the file has none)")
    print(f"converted {info['tensors']} tensors of a PaddleClas {info['kind']} file: resnet50d backbone with {neck}")
    if info["dropped"]:
        print(f"dropped the ImageNet classifier: {', '.join(info['dropped'])}")
    if info["head"]:
        weights = {name: list(tensor.shape) for name, tensor in info["head"]["state_dict"].items()}
        print(f"head ({info['head']['type']}, {info['head']['num_classes']} classes, not saved): {weights}")
    print(f"wrote {args.output}")
    return 0


def _export_config(args: argparse.Namespace) -> int:
    from prodrec.paddle import convert_paddle_pretrained, load_ppcls_config, native_yaml

    config, warnings = load_ppcls_config(args.config, overrides=args.overrides)
    config, notes = convert_paddle_pretrained(config, Path(args.output).parent if args.output else None)
    text = native_yaml(config, source=args.config, warnings=warnings, notes=notes)
    if not args.output:
        print(text, end="")
        return 0
    Path(args.output).write_text(text, encoding="utf-8")
    for warning in warnings:
        print(f"prodrec export-config: warning: {warning}", file=sys.stderr)
    print(f"wrote {args.output}" + "".join(f"; {note}" for note in notes))
    return 0
