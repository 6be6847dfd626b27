"""The paper's tasks and mixtures by name, over data under configurable roots.

Registering touches no disk. Each dataset is read from `<data_root>/<name>` (or
`dataset_roots[name]`; see `slt/tasks/mixing.py` and gin `slt.mixture_settings`) when a
dataset is built, and a missing one raises `sources.MissingDataError` naming the
dataset and the command that prepares it.

A clip dataset's directory holds `slt.prepare` shards (read as `slt/tasks/prepared.py`
does); `tfds:<builder dir>` instead
reads a prepared sign-language-datasets builder (rwth_phoenix2014_t, wmt_slt,
signsuisse, dgs_corpus; recognised by name in the path; `slt/tasks/tfds_sources.py`). A text
dataset's directory holds MADLAD-400-style `<split>/<src>-<tgt>.tsv|jsonl` files;
`tfds:<builder dir>:<src>-<tgt>` reads a TFDS Translation builder.
"""

from __future__ import annotations

import dataclasses

import seqio

from slt import storage
from slt.data import landmarks
from slt.tasks import languages, mixing, sources, tfds_sources
from slt.tasks.paper import tasks as paper_tasks


@dataclasses.dataclass(frozen=True)
class PaperDataset:
    name: str
    kind: str  # "clips" or "text"
    description: str
    sign_language: str | None = None  # None: each record's own languages
    spoken_language: str | None = None
    splits: tuple[str, ...] = ("train", "validation", "test")


DATASETS = {
    d.name: d
    for d in (
        PaperDataset(
            "yt_asl",
            "clips",
            "YouTube-ASL: ASL videos with English captions",
            "ase",
            "en",
            ("train",),
        ),
        PaperDataset(
            "yt_full",
            "clips",
            "the multilingual YouTube sign language corpus "
            "(many sign languages; languages per clip; includes the ASL part)",
            splits=("train",),
        ),
        PaperDataset(
            "mt_small", "text", "parallel text, small (MADLAD-400 style)", splits=("train",)
        ),
        PaperDataset(
            "mt_large", "text", "parallel text, large (MADLAD-400 style)", splits=("train",)
        ),
        PaperDataset("how2sign", "clips", "How2Sign (ASL -> English)", "ase", "en"),
        PaperDataset("elementary23", "clips", "Elementary23 (Greek SL -> Greek)", "gss", "el"),
        PaperDataset(
            "wmt23_dsgs", "clips", "WMT-SLT 2023 DSGS (Swiss German SL -> German)", "sgg", "de"
        ),
        PaperDataset(
            "wmt23_lsfch", "clips", "WMT-SLT 2023 LSF-CH (Swiss French SL -> French)", "ssr", "fr"
        ),
        PaperDataset(
            "wmt23_lisch", "clips", "WMT-SLT 2023 LIS-CH (Swiss Italian SL -> Italian)", "slf", "it"
        ),
        PaperDataset(
            "fleurs_asl0",
            "clips",
            "FLEURS-ASL#0 (ASL of FLORES sentences; English "
            "captions, other languages from translations.jsonl)",
            "ase",
            "en",
            ("validation", "test"),
        ),
    )
}

FINETUNE = ("how2sign", "elementary23", "wmt23_dsgs", "wmt23_lsfch", "wmt23_lisch")
AUG_LANGUAGES = tuple(x for x in languages.FLEURS_ASL0_LANGUAGES if x != "en")


def prepare_command(dataset: PaperDataset) -> str:
    if dataset.kind == "text":
        return (
            "write {root}/{split}/<src>-<tgt>.tsv files, one `source<TAB>target` pair "
            'per line (or .jsonl lines {{"source_language", "target_language", '
            '"source", "target"}}), e.g. from MADLAD-400'
        )
    return (
        f"python -m slt.prepare --manifest=<{dataset.name} manifest .jsonl/.tsv> "
        "--output_dir={root} --split={split}"
    )


def _translations_command(name: str) -> str:
    return (
        f'write {{root}} with one JSONL line per caption: {{"id": <the caption id in '
        f'the {name} shards>, "translations": {{"de": ..., "fr": ...}}}}'
    )


class ConfiguredClipSource(sources.ClipSource):
    """The clip source of a paper dataset, chosen from the root when data is read."""

    def __init__(self, dataset: PaperDataset):
        self.dataset_spec, self.name, self.splits = dataset, dataset.name, dataset.splits

    def _source(self) -> sources.ClipSource:
        root = mixing.dataset_root(self.name)
        spec = self.dataset_spec
        if root.startswith("tfds:"):
            path = root[len("tfds:") :]
            builder = tfds_sources.builder_name(path)
            fixed = (spec.sign_language, spec.spoken_language) if spec.sign_language else None
            return tfds_sources.TfdsClipSource(
                self.name,
                path,
                builder,
                landmarks.LandmarkConfig,
                prepare_command=(
                    f'pip install sign-language-datasets && python -c "import '
                    f"sign_language_datasets.datasets, tensorflow_datasets as tfds;"
                    f" tfds.load('{builder}/<config with holistic poses>', "
                    f'data_dir=...)"'
                ),
                languages=fixed,
                splits=spec.splits,
            )
        return sources.PreparedClipSource(self.name, root, prepare_command(spec), spec.splits)

    def check(self, split):
        self._source().check(split)

    def num_examples(self, split):
        return self._source().num_examples(split)

    def dataset(self, split, shuffle, seed, shard_info):
        return self._source().dataset(split, shuffle, seed, shard_info)

    def landmark_config(self) -> landmarks.LandmarkConfig:
        """The preprocessing the dataset was prepared with (default for TFDS)."""
        source = self._source()
        if isinstance(source, sources.PreparedClipSource):
            return source.landmark_config()
        return landmarks.LandmarkConfig()


class ConfiguredTextSource(sources.TextPairSource):
    def __init__(self, dataset: PaperDataset):
        self.dataset_spec, self.name, self.splits = dataset, dataset.name, dataset.splits

    def _source(self) -> sources.TextPairSource:
        root = mixing.dataset_root(self.name)
        if root.startswith("tfds:"):
            path, _, pair = root[len("tfds:") :].rpartition(":")
            if not path or "-" not in pair:
                raise ValueError(
                    f"{self.name}: a TFDS text root is tfds:<builder dir>:<src>-"
                    f"<tgt>, got {root!r}."
                )
            src, tgt = pair.split("-", 1)
            return sources.TfdsParallelText(
                self.name, path, src, tgt, "tfds build the Translation dataset", self.splits
            )
        return sources.ParallelTextFiles(
            self.name, root, prepare_command(self.dataset_spec), self.splits
        )

    def check(self, split):
        self._source().check(split)

    def dataset(self, split, shuffle, seed, shard_info):
        return self._source().dataset(split, shuffle, seed, shard_info)


def translations(dataset: str, language: str) -> sources.TranslationTable:
    def path():
        return mixing.SETTINGS.translations_files.get(dataset) or storage.join(
            mixing.dataset_root(dataset), "translations.jsonl"
        )

    return sources.TranslationTable(
        path,
        language,
        dataset=f"{dataset} translations",
        prepare_command=_translations_command(dataset),
    )


def _lang_suffix(dataset: PaperDataset) -> str:
    return f"_{dataset.sign_language}_{dataset.spoken_language}" if dataset.sign_language else ""


def register() -> dict[str, list[str]]:
    """Registers the tasks and mixtures; returns mixture -> task names."""
    clip_sources = {n: ConfiguredClipSource(d) for n, d in DATASETS.items() if d.kind == "clips"}
    fixed = {
        n: ((d.sign_language, d.spoken_language) if d.sign_language else None)
        for n, d in DATASETS.items()
    }
    names: dict[str, str] = {}
    for n in ("yt_asl", "yt_full"):
        d = DATASETS[n]
        names[f"{n}_slt"] = f"{n}_slt{_lang_suffix(d)}"
        names[f"{n}_align"] = f"{n}_align{_lang_suffix(d)}"
        paper_tasks.add_slt_task(
            names[f"{n}_slt"],
            clip_sources[n],
            languages_=fixed[n],
            landmark_config=clip_sources[n].landmark_config,
        )
        paper_tasks.add_alignment_task(
            names[f"{n}_align"],
            clip_sources[n],
            languages_=fixed[n],
            landmark_config=clip_sources[n].landmark_config,
        )
    for n in ("mt_small", "mt_large"):
        paper_tasks.add_mt_task(n, ConfiguredTextSource(DATASETS[n]))
    aug = []
    for x in AUG_LANGUAGES:
        name = f"yt_asl_aug_slt_ase_{x}"
        paper_tasks.add_augmented_slt_task(
            name,
            clip_sources["yt_asl"],
            x,
            translations("yt_asl", x),
            sign_language="ase",
            landmark_config=clip_sources["yt_asl"].landmark_config,
        )
        aug.append(name)
    finetune = {}
    for n in FINETUNE:
        d = DATASETS[n]
        finetune[n] = f"{n}_slt{_lang_suffix(d)}"
        paper_tasks.add_slt_task(
            finetune[n],
            clip_sources[n],
            languages_=fixed[n],
            metric_fns=paper_tasks.translation_metric_fns(d.spoken_language),
            landmark_config=clip_sources[n].landmark_config,
        )
    fleurs = ["fleurs_asl0_slt_ase_en"]
    paper_tasks.add_slt_task(
        fleurs[0],
        clip_sources["fleurs_asl0"],
        languages_=("ase", "en"),
        metric_fns=paper_tasks.translation_metric_fns("en"),
        landmark_config=clip_sources["fleurs_asl0"].landmark_config,
    )
    for x in AUG_LANGUAGES:
        name = f"fleurs_asl0_slt_ase_{x}"
        paper_tasks.add_augmented_slt_task(
            name,
            clip_sources["fleurs_asl0"],
            x,
            translations("fleurs_asl0", x),
            sign_language="ase",
            metric_fns=paper_tasks.translation_metric_fns(x),
            landmark_config=clip_sources["fleurs_asl0"].landmark_config,
        )
        fleurs.append(name)

    yt_asl = [names["yt_asl_slt"], names["yt_asl_align"]]
    yt_full = [names["yt_full_slt"], names["yt_full_align"]]
    mixtures = {
        "pretrain_yt_asl": {"sign": yt_asl},
        "pretrain_yt_full": {"sign": yt_full},
        "pretrain_yt_full_mt_small": {"sign": yt_full, "mt": ["mt_small"]},
        "pretrain_yt_full_mt_large": {"sign": yt_full, "mt": ["mt_large"]},
        "pretrain_yt_full_mt_large_aug": {"sign": yt_full + aug, "mt": ["mt_large"]},
        **{f"finetune_{n}": {"sign": [finetune[n]]} for n in FINETUNE},
        "finetune_all_benchmarks": {"sign": [finetune[n] for n in FINETUNE]},
        "eval_fleurs_asl0": {"sign": fleurs},
    }
    for name, groups in mixtures.items():
        mixing.register_mixture(name, groups)
    return {name: [t for g in groups.values() for t in g] for name, groups in mixtures.items()}


MIXTURES: dict[str, list[str]] = {}
if "pretrain_yt_asl" not in seqio.MixtureRegistry.names():
    MIXTURES = register()
