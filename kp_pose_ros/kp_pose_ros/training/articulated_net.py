"""The PAGE voting network: per-point part segmentation and radii to every part keypoint, from points and colour.

Point backbone: PointNet (shared per-point MLPs and a max-pooled global feature). It exports to ONNX as plain
Conv1d / ReduceMax / Concat with any point count, and runs in ONNX Runtime's CPU and GPU providers without custom
ops; neighbourhood backbones (PointNet++, DGCNN) need ball queries or k-NN gathers that export poorly and are slow
on the CPU this suite must also run on. Colour: a small CNN on the object's crop, sampled bilinearly at each
point's crop position (grid_sample: geometry-colour alignment, §4.2). GC-Fuser (Eq. 5-6): a per-point weight
w = softmax(W H(U F_G + V F_C)) (two logits, the first kept: a weight in [0, 1]) scales the colour feature before it
is concatenated with the geometry feature; fusion='concat' is the plain-concatenation ablation (w = 1). The paper's
mutual-information term between the two branches is not used.

Heads: segmentation logits over background + every category's parts; for each keypoint method a radius per point
and keypoint of every category (units of the observation's normalisation); and, from the pooled fused feature, the
'learned' keypoints regressed directly (the voting-vs-regression ablation).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv2d(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _mlp(*widths: int) -> nn.Module:
    layers = []
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VotingNet(nn.Module):
    def __init__(self, num_classes: int, num_keypoints: int, num_methods: int, fusion: str = 'gc') -> None:
        super().__init__()
        if fusion not in ('gc', 'concat'):
            raise ValueError(f"fusion must be 'gc' or 'concat', got {fusion!r}")
        self.fusion, self.num_keypoints = fusion, num_keypoints
        self.cnn = nn.Sequential(_conv2d(3, 32, 2), _conv2d(32, 32), _conv2d(32, 64, 2), _conv2d(64, 64),
                                 _conv2d(64, 64, dilation=2))
        self.local = _mlp(3, 64, 64)
        self.globe = _mlp(64, 128, 256)
        self.geometry = _mlp(64 + 256, 128)
        self.U, self.V = nn.Conv1d(128, 64, 1), nn.Conv1d(64, 64, 1)
        self.W = nn.Conv1d(64, 2, 1)
        self.fused = _mlp(128 + 64, 256, 128)
        self.seg = nn.Conv1d(128, num_classes, 1)
        self.radii = nn.Conv1d(128, num_methods * num_keypoints, 1)
        self.direct = nn.Sequential(nn.Linear(128 + 256, 256), nn.ReLU(inplace=True), nn.Linear(256, 3 * num_keypoints))

    def forward(self, points: torch.Tensor, crop: torch.Tensor, uv: torch.Tensor):
        """points (B, N, 3) normalised, crop (B, 3, S, S) in [0, 1], uv (B, N, 2) in [-1, 1] ->
        seg logits (B, N, C), radii (B, N, M * K), direct keypoints (B, K, 3)."""
        colour = F.grid_sample(self.cnn(crop), uv.unsqueeze(2), mode='bilinear', align_corners=False).squeeze(3)
        local = self.local(points.transpose(1, 2))
        pooled = self.globe(local).max(dim=2, keepdim=True)[0]
        geometry = self.geometry(torch.cat([local, pooled.expand(-1, -1, local.shape[2])], dim=1))
        if self.fusion == 'gc':
            weight = torch.softmax(self.W(torch.relu(self.U(geometry) + self.V(colour))), dim=1)[:, :1]
            colour = weight * colour
        fused = self.fused(torch.cat([colour, geometry], dim=1))
        summary = torch.cat([fused.max(dim=2)[0], pooled.squeeze(2)], dim=1)
        direct = self.direct(summary).view(-1, self.num_keypoints, 3)
        return self.seg(fused).transpose(1, 2), self.radii(fused).transpose(1, 2), direct
