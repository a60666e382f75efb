"""The README's figures, generated from a demo release (issue 17: the README claimed figures the
demo no longer gave, an example key of a quarantined cell and a shard pattern that missed two
training samples).

Each figure lives in a named block of README.md::

    <!-- demo:NAME -->
    ...generated text...
    <!-- /demo:NAME -->

    python tools/readme_figures.py RELEASE            # print every block
    python tools/readme_figures.py RELEASE --write    # rewrite the blocks in README.md
    python tools/readme_figures.py RELEASE --check    # exit 1 naming each block that drifted

RELEASE is what ``make demo`` builds (``build/demo/release``); tests/test_readme_figures.py
builds one the same way and runs ``--check``. Timings are not generated (they depend on the
machine): the README gives them with the date and command that measured them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

BLOCK = re.compile(
    r"(<!-- demo:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /demo:(?P=name) -->)", re.S
)


def _manifest(release: Path) -> dict:
    return json.loads((release / "manifest.json").read_text())


def _metrics(release: Path) -> dict:
    return json.loads((release / "reference" / "metrics.json").read_text())


def _shards(release: Path, split: str) -> list[str]:
    return sorted(s["path"] for s in _manifest(release)["shards"] if s["split"] == split)


def _members(release: Path, name: str) -> list[tuple[str, bytes]]:
    """(key, bytes) of one member in every sample of the release, in shard order."""
    out = []
    for path in sorted(s["path"] for s in _manifest(release)["shards"]):
        with tarfile.open(release / path) as tar:
            for info in tar:
                key, _, member = info.name.partition(".")
                if member == name:
                    f = tar.extractfile(info)
                    assert f is not None
                    out.append((key, f.read()))
    return out


def summary(release: Path) -> str:
    m = _manifest(release)
    splits = m["splits"]
    total = sum(splits.values())
    quarantined = m["quarantined"]
    planned = total + sum(quarantined.values())
    reasons = ", ".join(f"{n} as `{r}`" for r, n in sorted(quarantined.items()))
    qa = sum(len(json.loads(b)) for _, b in _members(release, "qa.json"))
    captions = sum(len(json.loads(b)) for _, b in _members(release, "captions.json"))
    ref = _metrics(release)
    masks, ret, cap = ref["masks"], ref["retrieval"], ref["captions"]
    split_text = ", ".join(f"{s} {n}" for s, n in sorted(splits.items(), key=lambda kv: -kv[1]))
    return (
        f"{planned} cells planned; {total} samples ({split_text}) with {captions} captions and "
        f"{qa} QA items; {sum(quarantined.values())} cells quarantined ({reasons}); "
        f"{len(m['shards'])} shards. The reference model trained on it: masks F1 "
        f"{masks['f1']:.3f}, text-to-pair R@1 {ret['recall_at_1']:.3f} against chance "
        f"{ret['chance_recall_at_1']:.3f}, caption CIDEr {cap['cider']:.3f} on the "
        f"{ref['eval_samples']} {ref['eval_split']} samples.\n"
    )


def reference(release: Path) -> str:
    ref = _metrics(release)
    masks, ret, cap = ref["masks"], ref["retrieval"], ref["captions"]
    floor = ref["training"]["baselines"]["captions_random_train_caption"]
    floor_text = ""
    if floor:
        floor_text = (
            f" (random training caption {floor['bleu4']:.2f} / {floor['rouge_l']:.2f} / "
            f"{floor['cider']:.2f})"
        )
    return (
        f"On the demo ({sum(_manifest(release)['splits'].values())} samples, "
        f"{ref['train_samples']} {ref['train_split']} / {ref['eval_samples']} "
        f"{ref['eval_split']}): masks P {masks['precision']:.2f} / R {masks['recall']:.2f} / "
        f"F1 {masks['f1']:.2f} / IoU {masks['iou']:.2f}; R@1 {ret['recall_at_1']:.2f}, R@5 "
        f"{ret['recall_at_5']:.2f}, R@10 {ret['recall_at_10']:.2f} (chance "
        f"{ret['chance_recall_at_1']:.2f} at R@1, gallery {ret['gallery']}); BLEU-4 "
        f"{cap['bleu4']:.2f}, ROUGE-L {cap['rouge_l']:.2f}, CIDEr {cap['cider']:.2f}"
        f"{floor_text}.\n"
    )


def key(release: Path) -> str:
    keys = [k for k, _ in _members(release, "json")]
    example = sorted(keys)[len(keys) // 2]
    return (
        f"Key `{{cell_id}}_{{t0:%Y%m%d}}_{{t1:%Y%m%d}}`, e.g. `{example}` (a demo sample), "
        "which is stable across versions. Members:\n"
    )


def webdataset(release: Path) -> str:
    train = _shards(release, "train")
    first, last = (Path(p).stem.split("-")[1] for p in (train[0], train[-1]))
    pattern = f"train-{{{first}..{last}}}.tar" if len(train) > 1 else Path(train[0]).name
    n = _manifest(release)["splits"]["train"]
    return (
        "```python\n"
        "import webdataset as wds\n"
        "\n"
        f"# the demo's {len(train)} train shards ({n} samples)\n"
        f'ds = wds.WebDataset("build/demo/release/shards/{pattern}", shardshuffle=False)\n'
        "for sample in ds:\n"
        '    print(sample["__key__"], sample["captions.json"][:80])\n'
        "```\n"
    )


def qa_count(release: Path) -> str:
    qa = sum(len(json.loads(b)) for _, b in _members(release, "qa.json"))
    total = sum(_manifest(release)["splits"].values())
    return (
        "GX costs about 2 s of import and first run, which a build spends in a child process "
        "while its cells run (`pipelines/release/sidecar.py`), and ~0.6 s per release once "
        f"imported (measured on the demo: {total} samples, {qa} QA items; "
        'benchmarks/RESULTS.md, "Fixed costs of a build" and "Incremental versions").\n'
    )


BLOCKS: dict[str, Callable[[Path], str]] = {
    "summary": summary,
    "reference": reference,
    "key": key,
    "webdataset": webdataset,
    "qa_count": qa_count,
}


def render(release: Path) -> dict[str, str]:
    return {name: make(release) for name, make in BLOCKS.items()}


def rewrite(text: str, blocks: dict[str, str]) -> tuple[str, list[str]]:
    """README text with every block replaced; the names of the blocks whose text changed."""
    changed: list[str] = []
    seen: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        seen.add(name)
        if name not in blocks:
            raise SystemExit(f"README.md has a block demo:{name} that no generator writes")
        if m.group("body") != blocks[name]:
            changed.append(name)
        return m.group(1) + blocks[name] + m.group(4)

    out = BLOCK.sub(sub, text)
    absent = sorted(set(blocks) - seen)
    if absent:
        raise SystemExit(f"README.md lacks the blocks: {', '.join(absent)}")
    return out, changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("release", type=Path)
    ap.add_argument("--readme", type=Path, default=README)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    blocks = render(args.release)
    if not (args.write or args.check):
        for name, body in blocks.items():
            sys.stdout.write(f"<!-- demo:{name} -->\n{body}<!-- /demo:{name} -->\n")
        return 0
    text = args.readme.read_text()
    new, changed = rewrite(text, blocks)
    if args.write:
        args.readme.write_text(new)
        print(f"{args.readme}: {len(changed)} block(s) rewritten: {', '.join(changed) or 'none'}")
        return 0
    if changed:
        print(
            f"{args.readme}: figures differ from {args.release} in block(s) "
            f"{', '.join(changed)}; run `python tools/readme_figures.py {args.release} --write`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
