"""PyTorch reference models and a twin-pair trainer, for the speed benchmark only (``bench/run.py``).

PyTorch is an optional, bench-only dependency: the package never imports this file. The models mirror
``butterfly_jax.models``: ResNet-20 with LayerNorm over the channels at each pixel (instead of BatchNorm),
bias-free convolutions, 1x1 convolution + norm shortcuts, He-normal (fan-in) init; the small CNN
(3x3 conv + ReLU + 2x2 max-pool per stage, dense, head); the MLP. Training: SGD with momentum 0.9
(``torch.optim.SGD``), cross-entropy, K networks trained one after another on the same batch.

``threads``: intra-op threads (0 = torch's default, one per core). On a machine shared with other jobs,
run with ``OMP_WAIT_POLICY=PASSIVE`` (``bench/run.py`` sets it): OpenMP threads that spin while waiting
made the MLP step 40x slower under load (0.39 s instead of 0.01 s).

``memory_format``: ``"channels_last"`` keeps activations NHWC in memory (oneDNN's preferred layout on CPU,
and the per-pixel LayerNorm then normalises a contiguous last axis) or ``"contiguous"`` (NCHW).
"""

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _he_(module):
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
      nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
      if m.bias is not None:
        nn.init.zeros_(m.bias)


class PixelLayerNorm(nn.Module):
  """LayerNorm over the channel axis at each pixel of an N,C,H,W tensor (eps 1e-5, scale and bias)."""

  def __init__(self, channels):
    super().__init__()
    self.norm = nn.LayerNorm(channels, eps=1e-5)

  def forward(self, x):
    return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.norm1 = PixelLayerNorm(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.norm2 = PixelLayerNorm(cout)
    self.shortcut = None
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), PixelLayerNorm(cout))

  def forward(self, x):
    y = F.relu(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    return F.relu((x if self.shortcut is None else self.shortcut(x)) + y)


class ResNet20(nn.Module):
  """CIFAR ResNet-20, widths 16w/32w/64w, LayerNorm per pixel. (Torch's "SAME" for stride 2 pads (1, 1)
  where XLA pads (0, 1): the same cost, a one-pixel shift of the sampling grid.)"""

  def __init__(self, width=1, num_classes=10, blocks=3, in_channels=3):
    super().__init__()
    c = 16 * width
    self.conv_in = nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)
    self.norm_in = PixelLayerNorm(c)
    layers, cin = [], c
    for s, mult in enumerate((1, 2, 4)):
      for b in range(blocks):
        layers.append(BasicBlock(cin, c * mult, 2 if (s > 0 and b == 0) else 1))
        cin = c * mult
    self.blocks = nn.Sequential(*layers)
    self.head = nn.Linear(cin, num_classes)
    _he_(self)

  def forward(self, x):
    x = F.relu(self.norm_in(self.conv_in(x)))
    x = self.blocks(x)
    return self.head(x.mean(dim=(2, 3)))


class SmallCNN(nn.Module):
  def __init__(self, in_channels=1, channels=(32, 64), dense=128, num_classes=10, size=28):
    super().__init__()
    convs, cin = [], in_channels
    for c in channels:
      convs.append(nn.Conv2d(cin, c, 3, 1, 1))
      cin, size = c, size // 2
    self.convs = nn.ModuleList(convs)
    self.dense = nn.Linear(cin * size * size, dense)
    self.head = nn.Linear(dense, num_classes)
    _he_(self)

  def forward(self, x):
    for conv in self.convs:
      x = F.max_pool2d(F.relu(conv(x)), 2)
    x = F.relu(self.dense(x.permute(0, 2, 3, 1).flatten(1)))  # flattened H x W x C, as in JAX
    return self.head(x)


class MLP(nn.Module):
  def __init__(self, in_features=784, hidden=(512, 512), num_classes=10):
    super().__init__()
    layers, n = [], in_features
    for h in hidden:
      layers += [nn.Linear(n, h), nn.ReLU()]
      n = h
    self.body = nn.Sequential(*layers)
    self.head = nn.Linear(n, num_classes)
    _he_(self)

  def forward(self, x):
    return self.head(self.body(x.flatten(1)))


def build(model: str, **kwargs) -> nn.Module:
  """``resnet20`` (``width``), ``cnn`` or ``mlp``, matching the JAX models of ``bench/run.py``."""
  if model == "resnet20":
    return ResNet20(**kwargs)
  if model == "cnn":
    return SmallCNN(**kwargs)
  if model == "mlp":
    return MLP(**kwargs)
  raise ValueError(f"model: unknown torch reference model {model!r}; allowed: resnet20, cnn, mlp")


class FamilyTrainer:
  """K networks of ``model`` trained one after another on the same batches: ``trainer.run(steps)``.

  Each step normalises a uint8 batch (``shape`` is H, W, C), then for each member: forward,
  cross-entropy, backward, ``SGD(lr=0.01, momentum=0.9).step()``. The first call also warms up.
  ``device``: ``"cpu"`` or ``"cuda"`` (data and networks live there; each step ends with a synchronisation).
  """

  def __init__(self, model: str, kwargs: dict, shape, k: int, batch: int = 128, n: int = 2048,
               memory_format: str = "channels_last", threads: int = 0, seed: int = 0, device: str = "cpu"):
    self.threads, self.device = threads, torch.device(device)
    if memory_format not in MEMORY_FORMATS:
      raise ValueError(f"memory_format: unknown {memory_format!r}; allowed: {', '.join(MEMORY_FORMATS)}")
    self.fmt, self.batch, self.n, self.step = MEMORY_FORMATS[memory_format], batch, n, 0
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    h, w, c = shape
    self.images = torch.from_numpy(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)).to(self.device)
    self.labels = torch.from_numpy(rng.integers(0, 10, n).astype(np.int64)).to(self.device)
    in_kw = {"in_features": h * w * c} if model == "mlp" else {}
    if model == "cnn":
      in_kw = {"in_channels": c, "size": h}
    if model == "resnet20":
      in_kw = {"in_channels": c}
    self.nets = [build(model, **kwargs, **in_kw).to(self.device, memory_format=self.fmt) for _ in range(k)]
    self.opts = [torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) for net in self.nets]

  def run(self, steps: int) -> list[float]:
    """Seconds of each of ``steps`` training steps of the whole family (``threads``: 0 = torch's default)."""
    if self.threads:
      torch.set_num_threads(self.threads)
    times = []
    for _ in range(steps):
      tic = time.perf_counter()
      start = (self.step * self.batch) % self.n
      x = ((self.images[start:start + self.batch].float() / 255.0 - 0.5) / 0.25).contiguous(memory_format=self.fmt)
      y = self.labels[start:start + self.batch]
      for net, opt in zip(self.nets, self.opts):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
      if self.device.type == "cuda":
        torch.cuda.synchronize()
      self.step += 1
      times.append(time.perf_counter() - tic)
    return times
