"""The published CIFAR-10 ResNets load through the registry (hash-checked, weights_only) and score what the
JPEG-75 copy in the offline mirror measures: 81.0% / 83.2% (±0.5), ImageNet normalisation, no augmentation."""

import pytest
import torch

from hkt.data.datamodule import ImageClassificationData
from hkt.models import build_model


@pytest.fixture(scope="module")
def cifar_test():
    data = ImageClassificationData("cifar10", val_size=5000, batch_size=500, num_workers=0)
    data.setup()
    return data.test_dataloader()


@pytest.mark.parametrize("depth, expected", [(20, 0.810), (56, 0.832)])
def test_published_checkpoint_accuracy_on_jpeg_copy(cifar_test, depth, expected):
    model = build_model(f"resnet{depth}", weights=f"resnet{depth}-cifar10").eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in cifar_test:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    assert total == 10000
    assert correct / total == pytest.approx(expected, abs=0.005)
