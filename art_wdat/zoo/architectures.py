"""Network architectures built by this package: :class:`SmallCNN`."""

from __future__ import annotations

import torch
from torch import nn

from art_wdat.validation import check_int


class SmallCNN(nn.Module):
    """A small conv net: ``[conv-relu-conv-relu-maxpool] x n`` blocks, then a linear head ``fc``.

    Two blocks for images smaller than 16 pixels (8x8 digits -> 2x2 features), three otherwise
    (32x32 CIFAR -> 4x4 features); the channel count doubles in each block. ``fc`` is the last module so
    that fine-tuning can re-initialise the head. Outputs logits.

    :param in_channels: number of input channels (1 for digits, 3 for CIFAR).
    :param nb_classes: number of classes.
    :param image_size: height (= width) of the square input images, at least 4.
    :param width: channels of the first block.
    """

    #: The smallest value of each constructor argument (two classes; 4 pixels survive two 2x2 poolings).
    MINIMUMS = {"in_channels": 1, "nb_classes": 2, "image_size": 4, "width": 1}

    def __init__(self, in_channels: int, nb_classes: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        given = {"in_channels": in_channels, "nb_classes": nb_classes, "image_size": image_size, "width": width}
        for name, low in self.MINIMUMS.items():
            check_int(name, given[name], low=low)
        #: The constructor arguments, plain python values, as stored in checkpoints.
        self.config: dict[str, int] = {name: int(value) for name, value in given.items()}
        channels, size = self.config["in_channels"], self.config["image_size"]
        layers: list[nn.Module] = []
        for block in range(2 if size < 16 else 3):
            out = self.config["width"] * 2**block
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(out, out, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        # Registered last on purpose: fine-tuning code finds the head as the last module.
        self.fc = nn.Linear(channels * size * size, self.config["nb_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``x`` of shape (N, in_channels, image_size, image_size)."""
        return self.fc(self.flatten(self.features(x)))
