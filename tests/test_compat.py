"""torcheval's torch.jit deprecation warning stays hidden, for slowlearn's imports and the user's own."""
import subprocess
import sys

import pytest


def stderr_of(code: str) -> str:
    return subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          check=True).stderr


@pytest.mark.parametrize("code", [
    "import slowlearn; from torcheval.metrics import MulticlassAccuracy",
    "import slowlearn; from slowlearn.train import default_cbs; default_cbs()",
])
def test_torcheval_imports_after_slowlearn_do_not_warn(code):
    assert "torch.jit.script" not in stderr_of(code)


def test_users_own_torch_jit_script_still_warns():
    """The filter covers torcheval's modules only, not the user's code."""
    code = ("import slowlearn, torch\nfrom torcheval.metrics import MulticlassAccuracy\n"
            "torch.jit.script(torch.nn.Identity())")
    assert "torch.jit.script" in stderr_of(code)
