"""The named choices of kpbench's settings, as enums the command line lists in ``--help``.

Kept free of heavy imports so the CLI can offer them without loading torch. The library's
tuples (``config.AMP_MODES``, ``samples.PATCH_SOURCES``, ``variant.INITIALISATIONS``,
``runner.LAUNCHERS``) are their values; ``patches.PATCH_PRESETS`` is checked against them by the
tests. Feature extractors are not among them: more can be registered at run time
(``kpbench.fid.register_extractor``), and reading that registry imports torch and every
protocol, so ``kpbench list`` names them and ``--help`` only points there.
"""

from __future__ import annotations

from enum import StrEnum


class Amp(StrEnum):
    """Mixed precision (autocast): off (float32), bf16, fp16 (with loss scaling; meant for CUDA), or
    auto: bf16 where the hardware computes it natively (CUDA with bf16, a CPU with AMX), else off
    (``kpbench.runtime.resolve_amp``)."""

    OFF = "off"
    BF16 = "bf16"
    FP16 = "fp16"
    AUTO = "auto"


class PatchSource(StrEnum):
    """Where the patches of a sample come from."""

    KEY = "key"
    RANDOM = "random"


class Preset(StrEnum):
    """Crop and key-patch filters for a kind of data (``kpbench.patches.PATCH_PRESETS``)."""

    DEFAULT = "default"
    CELEBA = "celeba"
    CELEBA_V1 = "celeba-v1"
    CELEBA_V2 = "celeba-v2"
    WATERFALL = "waterfall"


EDGEBOXES = "edgeboxes"  # the box source that is kpbench's own detector (else a box file)


class BoxFill(StrEnum):
    """What becomes of images with fewer than N boxes in a box file (``kpbench.boxfile``)."""

    SKIP = "skip"
    DETECT = "detect"


class Init(StrEnum):
    """Weight initialisation (``kpbench.nets.INITIALISERS``)."""

    PYTORCH = "pytorch"
    DCGAN = "dcgan"
    PYTORCH04 = "pytorch04"


class BnMode(StrEnum):
    """Which statistics the generator's batch-norm layers use when kpbench evaluates it
    (``kpbench.runs.BN_MODES``): each batch's own (the authors' code never calls ``.eval()``)
    or the running averages stored at training time (PyTorch's eval mode)."""

    BATCH = "batch"
    RUNNING = "running"


# The batch-norm mode of every evaluation unless a plan or --bn-mode says otherwise: the authors'
# code's (docs/fidelity.md, "Generation mode"). The one place to flip the default.
DEFAULT_BN_MODE: str = BnMode.BATCH.value
# The batch-norm mode of `kpbench generate`: the running averages make each image depend on its
# own patches and z only, so sample k of `--samples 4` is sample k of any larger K with that seed;
# batch statistics would make it depend on the other samples of its batch.
GENERATE_BN_MODE: str = BnMode.RUNNING.value


class Launcher(StrEnum):
    """How ``kpbench run`` starts a plan's cells."""

    LOCAL = "local"
    SLURM = "slurm"
    SUBMITIT_LOCAL = "submitit-local"
    SUBMITIT_DEBUG = "submitit-debug"


def choice_values(choice: type[StrEnum]) -> tuple[str, ...]:
    """The plain string values of an enum, in declaration order."""
    return tuple(member.value for member in choice)
