"""The code interpreter's sandbox: untrusted Python under bubblewrap, seccomp, rlimits and a uid pool."""

from qwenhost.tools.sandbox.config import SandboxConfig
from qwenhost.tools.sandbox.probe import SandboxUnavailable, probe
from qwenhost.tools.sandbox.runner import Sandbox, SandboxResult
from qwenhost.tools.sandbox.tool import CodeInterpreterTool

__all__ = ["CodeInterpreterTool", "Sandbox", "SandboxConfig", "SandboxResult", "SandboxUnavailable", "probe"]
