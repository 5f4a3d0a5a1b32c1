#!/usr/bin/env python3
"""vit_hpc against the transformers library (an implementation nobody here wrote).

Run on a machine with torch, transformers, safetensors and h5py (the GPU
machine has them), after building vit_hpc:

    python3 tests/hf/hf_interop.py --vit-hpc build/vit_hpc --data data/beans_test_224.h5 --work /tmp/hf

1. transformers creates a randomly initialised ViTForImageClassification
   (ViT-B/16, 3 labels) and saves it (model.safetensors + config.json);
2. `vit_hpc predict` loads it and runs the HDF5 test split on the GPU and on
   the CPU, in fp32; its logits must match transformers' on the same pixels;
3. vit_hpc trains that model for a few steps and exports it; transformers
   loads the export unchanged, and its logits must match `vit_hpc predict`'s
   logits of the same export.
Prints a table of max |difference| and exits non-zero when a check fails.
"""
import argparse
import csv
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
from transformers import ViTConfig, ViTForImageClassification

# fp32 on both sides, TF32 off on both: what is left is the order of float
# sums (GEMM algorithms, reductions) through 12 blocks. Logits of a random
# ViT-B/16 are O(1); 2e-3 absolute leaves room for that and fails on any
# real mismatch (a wrong GELU, eps, qkv order or normalisation moves logits
# by 1e-2 or more).
TOLERANCE = 2e-3


def hf_logits(model_dir, images, device):
    model = ViTForImageClassification.from_pretrained(model_dir, attn_implementation="eager").to(device).eval()
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    x = (x / 255.0 - 0.5) / 0.5  # the ViT image processor's normalisation
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 32):
            out.append(model(pixel_values=x[i:i + 32]).logits.float().cpu().numpy())
    return np.concatenate(out)


def predict_logits(vit_hpc, model_dir, data, device, work, tag):
    out = os.path.join(work, f"pred_{tag}.csv")
    cmd = [vit_hpc, "predict", "--model", model_dir, "--data", data, "--split", "test", "--device", device,
           "--precision", "fp32", "--output", out]
    subprocess.run(cmd, check=True)
    with open(out) as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    first = header.index(next(h for h in header if h.startswith("logit_")))
    return np.array([[float(v) for v in r[first:]] for r in rows], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vit-hpc", required=True)
    ap.add_argument("--data", required=True, help="HDF5 from vit_data_prep at 224 px with a test split")
    ap.add_argument("--work", required=True)
    ap.add_argument("--spec", default="configs/demo.yaml")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.work, exist_ok=True)
    with h5py.File(args.data, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["class_names"]]
        if f.attrs["storage"] != "raw" and f.attrs["storage"] != b"raw":
            sys.exit("hf_interop.py: make the HDF5 with --storage raw (the script reads pixels directly)")
        images = f["test/images"][:]
    device = "cuda" if torch.cuda.is_available() else "cpu"

    torch.manual_seed(0)
    config = ViTConfig(num_labels=3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    random_dir = os.path.join(args.work, "hf_random")
    ViTForImageClassification(config).save_pretrained(random_dir, safe_serialization=True)

    checks = []
    ref = hf_logits(random_dir, images, device)
    for dev in (["cuda"] if device == "cuda" else []) + ["cpu"]:
        ours = predict_logits(args.vit_hpc, random_dir, args.data, dev, args.work, f"random_{dev}")
        checks.append((f"transformers -> vit_hpc predict ({dev})", float(np.abs(ours - ref).max())))

    # Train a few steps from those weights, export, load the export in transformers.
    export_dir = os.path.join(args.work, "vit_hpc_export")
    run_dir = os.path.join(args.work, "runs")
    subprocess.run(["mpirun", "--allow-run-as-root", "-np", "1", args.vit_hpc, args.spec,
                    "--set", f"data.path={args.data}", "--set", "data.train_split=test",
                    "--set", "data.eval_split=test", "--set", "train.steps=4", "--set", "train.epochs=1",
                    "--set", f"model.pretrained={random_dir}", "--set", f"checkpoint.export_hf={export_dir}",
                    "--set", f"run.output_dir={run_dir}", "--set", "run.name=hf_export",
                    "--set", "plugin.name=torch_ddp", "--set", "plugin.precision=fp32",
                    "--set", "run.progress=false"], check=True)
    theirs = hf_logits(export_dir, images, device)
    ours = predict_logits(args.vit_hpc, export_dir, args.data, device, args.work, "export")
    checks.append(("vit_hpc export -> transformers", float(np.abs(ours - theirs).max())))
    moved = float(np.abs(theirs - ref).max())

    print(f"\n| check | max abs logit difference (tolerance {TOLERANCE}) |\n|---|---|")
    for name, diff in checks:
        print(f"| {name} | {diff:.3e} |")
    print(f"| (training moved the logits by) | {moved:.3e} |")
    failed = [n for n, d in checks if not d <= TOLERANCE]
    if moved <= TOLERANCE:
        failed.append("training did not change the exported weights")
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    print("hf_interop: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
