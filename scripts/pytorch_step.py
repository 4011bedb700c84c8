"""Times the same FF training step in PyTorch, for a same-machine comparison with `trifecta bench`.

Not part of the build or the tests. It restates the reference semantics (TRIFECTA.md): blocks of
Norm -> Conv3x3 (no bias) -> ReLU -> optional MaxPool2, goodness = mean of squares after the pool,
SymBa (alpha 4) or threshold loss, APL with one Adam per block over the previous block's parameters
plus its own, a learned label-embedding plane, and BatchNorm statistics over positives + negatives.

    python scripts/pytorch_step.py                      # trifecta bench's default workload
    python scripts/pytorch_step.py --width 0.25 --image-size 28 --channels 1 --batch-size 128 --apl
    python scripts/pytorch_step.py --width 0.25 --batch-size 128 --apl --mnist ../shared/datasets/mnist --epochs 2
    python scripts/pytorch_step.py --width 0.25 --batch-size 128 --apl --mnist ../shared/datasets/fashion-mnist --fashion
    python scripts/pytorch_step.py --batch-size 512 --apl --augment --cifar /tmp/cifar-jpeg/cifar-10-batches-bin --epochs 1

Prints the median step time, positives/s and positives+negatives/s. With --mnist or --cifar
(CIFAR-10's binary batches; `examples/to_cifar_bin.rs` writes the JPEG copy in that format),
trains on the real images instead and prints each epoch's training time and per-layer test
accuracy; --augment adds the reference's random crop (4 pixels of zero padding) and rotation
(within +-15 degrees, nearest, zero fill).
"""

import argparse
import gzip
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SMALL = [(128, True), (128, False), (256, True), (256, False), (256, False), (512, True)]


class Block(nn.Module):
    def __init__(self, c_in, c_out, pool, hw, batchnorm):
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in) if batchnorm else nn.LayerNorm([c_in, hw, hw])
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.conv(self.norm(x)))
        return F.max_pool2d(x, 2) if self.pool else x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--apl", action="store_true")
    p.add_argument("--layernorm", action="store_true")
    p.add_argument("--threshold", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mnist", type=Path, help="train on the IDX files in this folder")
    p.add_argument("--fashion", action="store_true", help="--mnist's folder is Fashion-MNIST: use its mean and std")
    p.add_argument("--cifar", type=Path, help="train on CIFAR-10's binary batches in this folder")
    p.add_argument("--augment", action="store_true", help="random crop and rotation (with --mnist/--cifar)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.mnist:
        a.image_size, a.channels = 28, 1
    if a.cifar:
        a.image_size, a.channels = 32, 3
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    blocks, embedding, opts = network(a.width, a.channels, a.image_size, not a.layernorm)

    b, s = a.batch_size, a.image_size
    images = torch.randn(b, a.channels, s, s)
    pos = torch.randint(0, 10, (b,))
    neg = (pos + torch.randint(1, 10, (b,))) % 10

    def step(t):
        x = torch.cat([images, images])
        labels = torch.cat([pos, neg])
        return step_on(t, x, labels)

    def step_on(t, x, labels):
        return apl_step(blocks, embedding, opts, t, x, labels, a.threshold)

    def step_local(t):
        x = torch.cat([images, images])
        labels = torch.cat([pos, neg])
        return step_local_on(t, x, labels)

    def step_local_on(t, x, labels):
        b = x.shape[0] // 2
        x = torch.cat([x, embedding(labels).view(-1, 1, s, s)], 1)
        for i, blk in enumerate(blocks):
            # Block 0's input stays attached, so that its loss trains the label embedding
            # (TRIFECTA.md; the golden values' non-APL variants have its gradient).
            x = blk(x.detach() if i else x)
            loss = ff_loss(x, b, a.threshold)
            opts[i].zero_grad()
            loss.backward()
            opts[i].step()

    run = step if a.apl else step_local
    if a.mnist or a.cifar:
        data = load_mnist(a.mnist, a.fashion) if a.mnist else load_cifar(a.cifar)
        return train_real(a, data, blocks, embedding, step_on if a.apl else step_local_on)
    times = []
    for t in range(a.warmup + a.steps):
        start = time.perf_counter()
        run(t)
        if t >= a.warmup:
            times.append(time.perf_counter() - start)
    med = statistics.median(times)
    print(
        f"pytorch {torch.__version__} threads {torch.get_num_threads()}: step median {med * 1e3:.1f} ms, "
        f"{b / med:.1f} samples/s ({2 * b / med:.1f} counting negatives)"
    )


def network(width, channels, side, batchnorm=True):
    """The `small` trunk at `width` for `channels` x `side` x `side` images, the label
    embedding, and per block an Adam over its own parameters and the previous block's (the
    embedding's for block 0)."""
    hw, c_in, blocks = side, channels + 1, []
    for c, pool in SMALL:
        c_out = max(1, round(c * width))
        blocks.append(Block(c_in, c_out, pool, hw, batchnorm))
        c_in, hw = c_out, hw // 2 if pool else hw
    blocks = nn.ModuleList(blocks)
    embedding = nn.Embedding(10, side * side)
    opts = []
    for i, b in enumerate(blocks):
        prev = embedding.parameters() if i == 0 else blocks[i - 1].parameters()
        opts.append(torch.optim.Adam([{"params": list(b.parameters())}, {"params": list(prev)}], lr=1e-3))
    return blocks, embedding, opts


def ff_loss(x, b, threshold=False):
    g = x.pow(2).flatten(1).mean(1)
    gp, gn = g[:b], g[b:]
    if threshold:
        return torch.cat([F.softplus(2 - gp), F.softplus(gn - 2)]).mean()
    return F.softplus(-4 * (gp - gn)).mean()


def apl_step(blocks, embedding, opts, t, x, labels, threshold=False):
    """One training step with APL on images `x` (positives, then the same images as negatives)
    and their `labels`: on even iterations blocks 1, 3, 5 learn, on odd ones blocks 0, 2, 4.
    Returns (block, loss) of the blocks that learned."""
    b, s = x.shape[0] // 2, x.shape[-1]
    x = torch.cat([x, embedding(labels).view(-1, 1, s, s)], 1)
    losses = []
    for i, blk in enumerate(blocks):
        x = blk(x)
        if i % 2 == t % 2:
            continue
        loss = ff_loss(x, b, threshold)
        opts[i].zero_grad()
        loss.backward()
        opts[i].step()
        x = x.detach()
        losses.append((i, loss.detach()))
    return losses


def evaluate(blocks, embedding, test_x, test_y):
    """Correct predictions per layer over the test set (eval mode): each image's label is the one
    whose plane gives that layer the highest goodness."""
    blocks.eval()
    s = test_x.shape[-1]
    correct = torch.zeros(len(blocks))
    with torch.no_grad():
        for first in range(0, len(test_y), 1000):
            x, y = test_x[first : first + 1000], test_y[first : first + 1000]
            goodness = torch.zeros(10, len(blocks), len(y))
            for label in range(10):
                plane = embedding(torch.full_like(y, label)).view(-1, 1, s, s)
                h = torch.cat([x, plane], 1)
                for i, blk in enumerate(blocks):
                    h = blk(h)
                    goodness[label, i] = h.pow(2).flatten(1).mean(1)
            correct += (goodness.argmax(0) == y).float().sum(1)
    return correct


def read_idx(path):
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(raw[4 + 4 * dims :]), dtype=torch.uint8).view(shape)


def load_mnist(folder, fashion=False):
    def one(stem):
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return read_idx(folder / name)
        raise SystemExit(f"{folder}: no {stem}[.gz]")

    def split(name):
        images = one(f"{name}-images-idx3-ubyte").float().div(255)
        return images.unsqueeze(1), one(f"{name}-labels-idx1-ubyte").long()

    stats = ([0.2860], [0.3530]) if fashion else ([0.1307], [0.3081])
    return split("train"), split("t10k"), stats


def load_cifar(folder):
    def batches(names):
        raw = b"".join((folder / n).read_bytes() for n in names)
        records = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, 3073)
        return records[:, 1:].reshape(-1, 3, 32, 32).float().div(255), records[:, 0].long()

    train = batches([f"data_batch_{i}.bin" for i in range(1, 6)])
    # The reference's normalisation constants (TRIFECTA.md).
    return train, batches(["test_batch.bin"]), ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])


def augment(x, pad=4, degrees=15.0):
    """Random crop with zero padding, then a random rotation about the centre (nearest, zero
    fill), per image, on [0, 1] pixels before normalisation."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n)).tolist()
    cropped = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    angle = (torch.rand(n) * 2 - 1) * degrees * torch.pi / 180
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(cropped.shape), align_corners=False)
    return F.grid_sample(cropped, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def train_real(a, data, blocks, embedding, step_on):
    (train_x, train_y), (test_x, test_y), (mean, std) = data
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    test_x = (test_x - mean) / std
    b, t = a.batch_size, 0
    for epoch in range(a.epochs):
        blocks.train()
        order = torch.randperm(len(train_y))
        start = time.perf_counter()
        for first in range(0, len(order), b):
            idx = order[first : first + b]
            x, pos = train_x[idx], train_y[idx]
            if a.augment:
                x = augment(x)
            x = (x - mean) / std
            neg = (pos + torch.randint(1, 10, pos.shape)) % 10
            step_on(t, torch.cat([x, x]), torch.cat([pos, neg]))
            t += 1
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        correct = evaluate(blocks, embedding, test_x, test_y)
        eval_s = time.perf_counter() - start
        acc = " / ".join(f"{100 * c / len(test_y):.1f}" for c in correct)
        print(f"epoch {epoch + 1}: train {train_s:.1f} s, eval {eval_s:.1f} s, test accuracy per layer {acc}", flush=True)


if __name__ == "__main__":
    main()
