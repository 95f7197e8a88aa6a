"""The code interpreter's sandbox: untrusted Python under bubblewrap, seccomp, rlimits and a uid pool."""

from qwenhost.tools.sandbox.config import SandboxConfig
from qwenhost.tools.sandbox.output import SandboxResult
from qwenhost.tools.sandbox.probe import SandboxUnavailable, prepare_sandbox, probe
from qwenhost.tools.sandbox.runner import Sandbox
from qwenhost.tools.sandbox.tool import CodeInterpreterTool

__all__ = [
    "CodeInterpreterTool",
    "Sandbox",
    "SandboxConfig",
    "SandboxResult",
    "SandboxUnavailable",
    "prepare_sandbox",
    "probe",
]
