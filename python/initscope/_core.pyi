"""Type stubs of the compiled kernel ``initscope._core`` (sources in ``cpp/``)."""

from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

#: A per-unit accumulator of every layer (``initscope.result.PerUnit``): one array per
#: layer, or one ``(layers, width)`` array when every layer has the same width.
_PerUnit = list[NDArray[np.float64]] | NDArray[np.float64]

__version__: str
TILE_ROWS: int
"""Samples per tile, one GEMM call each; chunks hold whole tiles."""
WIDE_TILES: int
"""Tiles per GEMM call of a wide layer (chunks then hold whole groups of them)."""
WIDE_WEIGHTS: int
"""``fan_in * fan_out`` from which a layer is wide."""
BLOCK_COLUMNS: int
"""Layers twice this wide or more multiply in blocks of about this many columns."""
MIN_JOBS: int
"""Layers with fewer GEMM calls of rows than this multiply in blocks of columns too."""
MIN_BLOCK_COLUMNS: int
"""The narrowest such block."""
GRAD_ROWS: int
"""Rows of a layer's inputs per weight-gradient job (a fixed partition of dW)."""
SEGMENT: int
"""Elements drawn per parallel job."""
WEIGHT_CACHE_BYTES: int
"""Drawn weights of all layers are kept between chunks up to this many bytes."""
HIST_COPIES: int
"""Interleaved copies of each thread's histogram."""

class WeightSource:
    """Where a layer's weights come from."""

    given: ClassVar[WeightSource]
    normal: ClassVar[WeightSource]
    uniform: ClassVar[WeightSource]
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class LayerSpec:
    """One dense layer of a run, in kernel terms.

    ``activation`` is the kernel code (``Activation.code``), ``param`` its slope or alpha,
    ``saturation`` its ``(low, high)`` range or None. Weights are drawn as
    ``value * scale + shift`` for ``source`` normal or uniform, or given as a
    ``(fan_in, fan_out)`` array with ``source`` given.
    """

    fan_in: int
    fan_out: int
    activation: int
    param: float
    saturation: tuple[float, float] | None
    source: WeightSource
    scale: float
    shift: float
    weights: NDArray[np.floating] | None
    bias_std: float
    def __init__(
        self,
        *,
        fan_in: int,
        fan_out: int,
        activation: int = 0,
        param: float = 0.0,
        saturation: tuple[float, float] | None = None,
        source: WeightSource = ...,
        scale: float = 1.0,
        shift: float = 0.0,
        weights: NDArray[np.floating] | None = None,
        bias_std: float = 0.0,
    ) -> None: ...

class RawStats:
    """What a run returns: the fields of ``initscope.result.RawStats``, read-only."""

    @property
    def unit_mean(self) -> _PerUnit: ...
    @property
    def unit_m2(self) -> _PerUnit: ...
    @property
    def pre_unit_mean(self) -> _PerUnit: ...
    @property
    def pre_unit_m2(self) -> _PerUnit: ...
    @property
    def min(self) -> NDArray[np.float64]: ...
    @property
    def max(self) -> NDArray[np.float64]: ...
    @property
    def hist(self) -> NDArray[np.int64]: ...
    @property
    def below(self) -> NDArray[np.int64]: ...
    @property
    def above(self) -> NDArray[np.int64]: ...
    @property
    def zeros(self) -> NDArray[np.int64]: ...
    @property
    def saturated(self) -> NDArray[np.int64]: ...
    @property
    def nonfinite(self) -> NDArray[np.int64]: ...
    @property
    def pre_nonfinite(self) -> NDArray[np.int64]: ...
    @property
    def activations(self) -> list[NDArray[np.floating]] | None: ...
    @property
    def deriv_sq_sum(self) -> NDArray[np.float64]: ...
    @property
    def grads(self) -> GradStats | None: ...

class GradStats:
    """What a run with gradients returns: the fields of ``initscope.result.GradRaw``."""

    @property
    def unit_mean(self) -> _PerUnit: ...
    @property
    def unit_m2(self) -> _PerUnit: ...
    @property
    def min(self) -> NDArray[np.float64]: ...
    @property
    def max(self) -> NDArray[np.float64]: ...
    @property
    def hist(self) -> NDArray[np.int64]: ...
    @property
    def below(self) -> NDArray[np.int64]: ...
    @property
    def above(self) -> NDArray[np.int64]: ...
    @property
    def nonfinite(self) -> NDArray[np.int64]: ...
    @property
    def hist_range(self) -> tuple[float, float]: ...
    @property
    def weight_grad_std(self) -> NDArray[np.float64]: ...
    @property
    def weight_grad_norm(self) -> NDArray[np.float64]: ...
    @property
    def weight_std(self) -> NDArray[np.float64]: ...

def propagate(
    *,
    n_samples: int,
    input_dim: int,
    seeds: list[int],
    dtype: DTypeLike,
    inputs: NDArray[np.floating] | None,
    layers: list[LayerSpec],
    bins: int,
    hist_low: float,
    hist_high: float,
    threads: int,
    chunk_size: int,
    keep_activations: bool,
    gradients: bool = False,
    output_grad: NDArray[np.floating] | None = None,
    grad_bins: int = 30,
    grad_range: tuple[float, float] | None = None,
    weight_cache_bytes: int = ...,
) -> list[RawStats]:
    """Run a checked plan once per seed; returns each run's RawStats."""

def blas_info() -> dict[str, str]:
    """OpenBLAS's configuration and the kernel family it picked for this CPU."""

def build_info() -> dict[str, Any]:
    """How this module was compiled (``version``, ``compiler``, ``cxx_flags``), and the builds
    of the kernel: ``compiled_isas``, ``supported_isas`` (those this CPU runs) and ``isa``,
    the one that runs."""

class _Testing(ModuleType):
    def normal(
        self,
        seed: int,
        stream: int,
        layer: int,
        start: int,
        count: int,
        dtype: DTypeLike = "float64",
    ) -> NDArray[np.floating]:
        """Standard normals ``start .. start + count - 1`` (as ``initscope.random.normal``)."""
    def uniform(
        self,
        seed: int,
        stream: int,
        layer: int,
        start: int,
        count: int,
        dtype: DTypeLike = "float64",
    ) -> NDArray[np.floating]:
        """Uniforms on ``[0, 1)`` (as ``initscope.random.uniform``)."""
    def philox4x32(
        self, counter: tuple[int, int, int, int], key: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """One Philox4x32-10 block."""
    def activate(self, code: int, param: float, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """The activation with kernel code ``code`` applied to ``x`` (dtype preserved)."""
    def derive(self, code: int, param: float, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """The derivative of the activation with kernel code ``code`` at ``x``."""
    def set_isa(self, isa: str) -> None:
        """Run the build for instruction set ``isa`` (one of ``supported_isas``) from now on."""

testing: _Testing
"""The submodule ``_core.testing``: entry points for tests of the kernel."""
