"""A head that sees the image at full resolution, on top of the library's UNet++.

segmentation_models_pytorch_3d's UNet++ drops the encoder's full-resolution feature ("remove first skip with same
spatial resolution"), and EfficientNet's stem halves the resolution at once: the finest features its decoder
combines are at 2 × 0.8 = 1.6 mm, and its last block only upsamples them. A PVS is one to three 0.8 mm voxels
wide, so where its edge lies within a voxel (a voxel a quarter filled against one half filled) is decided from
features that never saw that voxel's own intensity. :class:`FullResolutionUNetPlusPlus` adds the missing skip:
two 3 × 3 × 3 convolutions on the input image beside the decoder's last features, whose output is added to the
UNet++'s logits. Its last layer starts at zero, so a network grown from a trained UNet++ (``full_res_channels``
set on a warm start from a model without it) starts as that model and learns only the correction.

The parameters keep the library's names (``encoder.*``, ``decoder.*``, ``segmentation_head.*``) and add
``full_res.*``: a state dict of the plain UNet++ loads with only the head's tensors missing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

HEAD_PREFIX = "full_res."


class FullResolutionHead(nn.Module):
    """The correction of the logits from the image and the decoder's last features, both at full resolution.

    Args:
        in_channels: image channels.
        feature_channels: channels of the decoder's last block.
        channels: width of the head's two convolutions.
        classes: output channels.
    """

    def __init__(self, in_channels: int, feature_channels: int, channels: int, classes: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(in_channels + feature_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv3d(channels, classes, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, image: Tensor, features: Tensor) -> Tensor:
        """The correction, of shape ``[B, classes, *image's spatial shape]``."""
        return self.out(self.block(torch.cat([image, features.to(image.dtype)], dim=1)))


class FullResolutionUNetPlusPlus(nn.Module):
    """A segmentation_models_pytorch_3d UNet++ whose logits are corrected by a :class:`FullResolutionHead`.

    Args:
        unet: the library's UnetPlusPlus (its encoder, decoder and segmentation head are taken over).
        in_channels: image channels.
        feature_channels: channels of its decoder's last block.
        channels: width of the head (positive).
        classes: output channels.

    Raises:
        ValueError: when ``channels`` is not a positive int.
    """

    def __init__(self, unet: nn.Module, in_channels: int, feature_channels: int, channels: int, classes: int) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"full_res_channels must be 0 (none) or a positive int, not {channels!r}.")
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        self.segmentation_head = unet.segmentation_head
        self.full_res = FullResolutionHead(in_channels, feature_channels, channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``[B, in_channels, X, Y, Z]``, each spatial size a multiple of 32."""
        features = self.decoder(*self.encoder(x))
        return self.segmentation_head(features) + self.full_res(x, features)
