"""MkDocs hooks (mkdocs.yml ``hooks:``): the configuration reference's type and default columns,
filled from the typed config schema and the composed defaults at every build, so they cannot drift.

In ``docs/configuration.md`` the tables under "## Reference of keys" are written as
``| key | meaning |``; each row names its keys in backticks (``env.id``, or several:
``network.noisy``, ``network.noisy_std``). The build turns them into ``| key | type | default |
meaning |``: the type from the dataclasses of ``dqn_cli.config``, the default the value that
``dqn train`` (``dqn eval`` in its section) runs with when nothing is given, composed by Hydra from
the YAML. tests/test_docs.py checks that every key of the schema has exactly one row.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing

SECTION = "## Reference of keys"
EVAL_SECTION = "### `dqn eval`"
KEY = re.compile(r"`([a-z_][a-z0-9_.]*)`")


def schema_types(cls, prefix: str = "") -> dict[str, str]:
    """{dotted key: its type in words} for every leaf of a config dataclass."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(schema_types(kind, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = type_words(kind)
    return out


def type_words(kind) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else type_words(a) for a in args)
    if origin is list:
        return f"list of {type_words(args[0])}" if args and args[0] is not typing.Any else "list"
    return getattr(kind, "__name__", str(kind))


def composed_defaults(config_name: str) -> dict[str, object]:
    """{dotted key: value} of ``dqn train`` / ``dqn eval`` with no arguments (resolved)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dqn_cli.app.cli import config_dir
    from dqn_cli.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name), resolve=True)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield prefix + k, v

    return dict(flat(cfg))


def _lines(markdown: str):
    """(section, line) for each line: "train" in the reference tables, "eval" in ``dqn eval``'s,
    else None."""
    where = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            where = "train" if line.strip() == SECTION else None
        if where and line.strip() == EVAL_SECTION:
            where = "eval"
        yield where, line


def reference_rows(markdown: str) -> list[tuple[str, list[str]]]:
    """(section: "train" or "eval", the keys of the row) of every row of the reference tables."""
    return [
        (where, KEY.findall(line.split("|")[1])) for where, line in _lines(markdown) if where and line.startswith("| `")
    ]


def fill_reference(markdown: str) -> str:
    """The reference tables with their type and default columns."""
    from dqn_cli.config import EvalCommandConfig, TrainConfig

    types = {"train": schema_types(TrainConfig), "eval": schema_types(EvalCommandConfig)}
    defaults = {"train": composed_defaults("train"), "eval": composed_defaults("eval")}
    out = []
    for where, line in _lines(markdown):
        if where and line.strip() == "| key | meaning |":
            line = "| key | type | default | meaning |"
        elif where and line.strip() == "| --- | --- |":
            line = "| --- | --- | --- | --- |"
        elif where and line.startswith("| `"):
            _, first, *rest = line.split("|")
            keys = KEY.findall(first)
            kind = "<br>".join(types[where].get(k, "?") for k in keys)
            default = "<br>".join(f"`{json.dumps(defaults[where].get(k))}`" for k in keys)
            line = "|".join(["", first, f" {kind} ", f" {default} ", *rest])
        out.append(line)
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:  # the MkDocs hook
    if page.file.src_uri == "configuration.md":
        return fill_reference(markdown)
    return markdown
