"""Trains pytorch_step.py's network from trifecta's initial weights on trifecta's batches.

Not part of the build or the tests. `examples/replay_dump.rs` writes one epoch of ours (the
initial weights, the shuffled order, the negative labels, our per-step losses and the weights
after the epoch); this trains the same semantics in PyTorch on exactly those draws and prints
both sides: the losses at a few steps, each block's mean loss over the epoch's last 100 steps,
and the per-layer test accuracy of both implementations' weights after the epoch, evaluated
here. What still differs is arithmetic (float32 summation order), not randomness.

--torch-init and --torch-batches put back one source of randomness each: PyTorch's own initial
weights, or its own shuffle and negatives, drawn as `pytorch_step.py --seed S` draws them (with
both, this is that script's run of seed S). --init-from OTHER starts from another dump's initial
weights instead (ours, of another seed), on this dump's batches: the control for --torch-init.

    cargo run --release --example replay_dump -- fashion-mnist ../shared/datasets/fashion-mnist 0 /tmp/replay
    python scripts/pytorch_replay.py /tmp/replay ../shared/datasets/fashion-mnist --fashion
"""

import argparse
import json
import struct
from pathlib import Path

import numpy as np
import torch

from pytorch_step import apl_step, evaluate, load_mnist, network


def read_safetensors(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[start:end], dtype=np.float32).copy())
    return out


def load_into(blocks, embedding, tensors, path):
    """Copies trifecta's flattened tensors into the modules, by PyTorch name."""
    named = {f"block{i}.{k}": v for i, b in enumerate(blocks) for k, v in b.state_dict().items()}
    named["embedding.weight"] = embedding.weight.data
    for name, target in named.items():
        if name.endswith("num_batches_tracked"):
            continue
        if name not in tensors:
            if "running" in name:
                continue  # the initial weights carry no running statistics
            raise SystemExit(f"{path}: no tensor {name}")
        target.copy_(tensors[name].view_as(target))


def accuracy(blocks, embedding, x, y):
    return " / ".join(f"{100 * c / len(y):.2f}" for c in evaluate(blocks, embedding, x, y))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dump", type=Path, help="replay_dump's output folder")
    p.add_argument("data", type=Path, help="the IDX files it trained on")
    p.add_argument("--fashion", action="store_true", help="the data is Fashion-MNIST")
    init = p.add_mutually_exclusive_group()
    init.add_argument("--torch-init", action="store_true", help="PyTorch's initial weights, not ours")
    init.add_argument("--init-from", type=Path, help="another dump whose initial weights to start from")
    p.add_argument("--torch-batches", action="store_true", help="PyTorch's shuffle and negatives")
    p.add_argument("--seed", type=int, default=0, help="PyTorch's seed for those")
    a = p.parse_args()
    (train_x, train_y), (test_x, test_y), (mean, std) = load_mnist(a.data, a.fashion)
    train_x, test_x = (train_x - mean[0]) / std[0], (test_x - mean[0]) / std[0]
    side = train_x.shape[-1]
    stream = read_safetensors(a.dump / "stream.safetensors")
    batch, width = int(stream["batch"][0]), float(stream["width"][0])
    order, negative = stream["order"].long(), stream["negative"].long()
    ours = stream["losses"].view(-1, 5)

    # pytorch_step.py's draws, in its order: the initial weights, its benchmark inputs, then
    # per epoch the shuffle and per step the negatives.
    torch.manual_seed(a.seed)
    blocks, embedding, opts = network(width, 1, side)
    torch.randn(batch, 1, side, side), torch.randint(0, 10, (batch,)), torch.randint(1, 10, (batch,))
    if not a.torch_init:
        init = (a.init_from or a.dump) / "init.safetensors"
        with torch.no_grad():
            load_into(blocks, embedding, read_safetensors(init), init)
    if a.torch_batches:
        order = torch.randperm(len(train_y))

    log = []
    blocks.train()
    for t, first in enumerate(range(0, len(order), batch)):
        idx = order[first : first + batch]
        x, pos, neg = train_x[idx], train_y[idx], negative[first : first + batch]
        if a.torch_batches:
            neg = (pos + torch.randint(1, 10, pos.shape)) % 10
        for i, loss in apl_step(blocks, embedding, opts, t, torch.cat([x, x]), torch.cat([pos, neg])):
            log.append((t, i, loss.item()))
    log = torch.tensor(log)
    if log.shape[0] != ours.shape[0] or not torch.equal(log[:, :2], ours[:, :2]):
        raise SystemExit(f"{a.dump}: the (step, block) updates differ from ours")
    steps = int(log[-1, 0]) + 1
    for t in sorted({0, 1, 10, 100, steps - 1}):
        sel = log[:, 0] == t
        print(f"step {t}: loss pytorch {[round(v, 5) for v in log[sel, 2].tolist()]}, ours {[round(v, 5) for v in ours[sel, 2].tolist()]}")
    print("mean loss over the last 100 steps, per block: pytorch / ours")
    for i in range(len(blocks)):
        sel = (log[:, 1] == i) & (log[:, 0] >= steps - 100)
        print(f"  block {i}: {log[sel, 2].mean():.4f} / {ours[sel, 2].mean():.4f}")
    print(f"test accuracy per layer, pytorch: {accuracy(blocks, embedding, test_x, test_y)}")
    theirs_blocks, theirs_embedding, _ = network(width, 1, side)
    after = a.dump / "after.safetensors"
    with torch.no_grad():
        load_into(theirs_blocks, theirs_embedding, read_safetensors(after), after)
    print(f"test accuracy per layer, ours:    {accuracy(theirs_blocks, theirs_embedding, test_x, test_y)}")


if __name__ == "__main__":
    main()
