"""Device settings: an unknown or absent device is a ConfigError naming the key."""

import pytest
import torch

from planlift.errors import ConfigError
from planlift.models.devices import resolve_device


@pytest.mark.parametrize("device", ["gpu", "cuda:x", ""])
def test_an_unknown_device_names_the_key_and_the_accepted_values(device):
    with pytest.raises(
        ConfigError, match=rf"^rm\.device must be one of auto, cpu, cuda or .*, got '{device}'"
    ):
        resolve_device(device, "rm.device")


def test_the_hf_executor_names_its_key(tiny_checkpoint):
    from planlift.executors import HFExecutor

    with pytest.raises(ConfigError, match=r"^executor\.device must be one of"):
        HFExecutor(str(tiny_checkpoint), device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a machine without a GPU gives")
def test_cuda_without_a_gpu_names_the_key():
    with pytest.raises(ConfigError, match=r"rm\.device is 'cuda', but this machine sees 0 CUDA device"):
        resolve_device("cuda", "rm.device")
