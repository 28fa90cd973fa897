"""The exit codes of every program of the package: nodes (`ros2 run`, launch) and `av-scene-vlm` alike.

Why one table: a supervisor or a script reacts to a cause, not to a program, so the same cause (a
missing model, an unreadable input) must give the same code wherever it happens. README, "Exit codes".
"""

from __future__ import annotations

__all__ = ["EXIT_DEVICE_LOST", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "model_error_code"]

EXIT_OK = 0  # done; also a node stopped by SIGINT/SIGTERM or a lifecycle shutdown
EXIT_FAILED = 1  # runtime: a model, an input or an output that cannot be found, read or written
EXIT_USAGE = 2  # usage: a bad command-line option, argument, parameter or task set
# A node stopped on a sticky device error (an illegal address, a launch failure): the CUDA context is lost
# for the whole process, so only a new process (launch `respawn`, a lifecycle manager) brings it back.
EXIT_DEVICE_LOST = 3


def model_error_code(exc: BaseException) -> int:
    """A model that cannot be found or loaded is 1; a backend option this install cannot honour
    (`BackendError`: an unknown backend or provider, a provider onnxruntime lacks) is a bad
    parameter or option, 2. Both come from the engine's start-up checks as ModelLoadError."""
    from av_scene_vlm.core.backend_options import BackendError

    return EXIT_USAGE if isinstance(exc, BackendError) else EXIT_FAILED
