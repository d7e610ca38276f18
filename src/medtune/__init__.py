"""medtune: fine-tune and evaluate LLMs for medical QA, with human-inspired learning orders.

Every stage is a function from artifacts to an artifact (see ``docs``/README): data → difficulty /
categories → order → training → evaluation → experiments (the grid) → report.
"""

__version__ = "0.1.0"


def _quiet_known_harmless_warnings() -> None:
    # bitsandbytes 0.50 logs "Failed to load CPU gemm_4bit_forward from kernels-community" at import on
    # AMX CPUs; it falls back to its own kernel (measured: 4-bit works here). Installing `kernels` would
    # fetch from the hub at run time, so the message only alarms users.
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # peft 0.21 still calls transformers 5's deprecated `is_gradient_checkpointing` on every LoRA setup.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


_quiet_known_harmless_warnings()
