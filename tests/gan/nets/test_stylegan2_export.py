"""StyleGAN2 export: safetensors + JSON round trip gives identical images and buffers, loads without Lightning or
unpickling (checked in a fresh interpreter), refuses to overwrite, and detects a changed weights file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gan.nets.stylegan2 import CONFIG_FILE, WEIGHTS_FILE, Generator, load_exported, read_export_config, save_exported

torch.set_num_threads(1)

TINY = {"resolution": 32, "channel_base": 256, "channel_max": 16, "z_dim": 16, "w_dim": 16, "mapping_layers": 2}
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def trained_like_generator() -> Generator:
    """A conditional generator whose buffers and noise strengths are not at their initial values."""
    torch.manual_seed(0)
    G = Generator(num_classes=3, **TINY)
    with torch.no_grad():
        for layer in G.synthesis.noise_layers():
            layer.noise_strength.fill_(0.3)
        labels = torch.arange(3).repeat(4)
        G.mapping.update_w_avg(*G.mapping.w_stats(G.mapping(torch.randn(12, 16), labels), labels), beta=0.5)
    return G


def test_round_trip_gives_identical_images_and_buffers(tmp_path, trained_like_generator):
    G = trained_like_generator
    out = save_exported(G, tmp_path / "export", metadata={"class_names": ["a", "b", "c"], "mpp": 0.25})
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    H = load_exported(out)
    assert not H.training
    assert H.config == G.config
    for (k, v), (k2, v2) in zip(G.state_dict().items(), H.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    z, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        for psi in (1.0, 0.6, 0.0):
            assert torch.equal(G.eval()(z, labels, psi=psi), H(z, labels, psi=psi))
    config = read_export_config(out)
    assert config["metadata"] == {"class_names": ["a", "b", "c"], "mpp": 0.25}
    assert config["generator"] == G.config


def test_weights_file_holds_every_parameter_and_buffer(tmp_path, trained_like_generator):
    G = trained_like_generator
    save_exported(G, tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "medsynth.stylegan2.generator/1"}, "one header key: a stable sha256"
    assert keys == set(G.state_dict())
    assert {"mapping.w_avg", "mapping.class_w_avg"} <= keys
    assert sum(k.endswith("noise_const") for k in keys) == len(G.synthesis.noise_layers())
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["format_version"] == 1 and config["weights"] == WEIGHTS_FILE


def test_load_needs_no_lightning_and_reproduces_the_images_in_a_fresh_interpreter(tmp_path, trained_like_generator):
    G = trained_like_generator
    save_exported(G, tmp_path)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(7))
    threads = torch.get_num_threads()  # other test modules may have changed it
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            expected = G.eval()(z, torch.tensor([2, 0]), psi=0.7)
    finally:
        torch.set_num_threads(threads)
    torch.save({"z": z, "images": expected}, tmp_path / "expected.pt")
    code = (
        "import sys, torch\n"
        "torch.set_num_threads(1)  # as this process: CPU reductions are bit-exact for a fixed thread count\n"
        "import gan.nets.stylegan2 as sg\n"
        f"G = sg.load_exported({str(tmp_path)!r})\n"
        f"ref = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)\n"
        "with torch.no_grad():\n"
        "    out = G(ref['z'], torch.tensor([2, 0]), psi=0.7)\n"
        "assert torch.equal(out, ref['images']), (out - ref['images']).abs().max()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_existing_export_is_refused_unless_overwrite(tmp_path, trained_like_generator):
    save_exported(trained_like_generator, tmp_path)
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_exported(trained_like_generator, tmp_path)
    save_exported(trained_like_generator, tmp_path, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_a_changed_weights_file_or_a_foreign_config_is_rejected(tmp_path, trained_like_generator):
    save_exported(trained_like_generator, tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_exported(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a StyleGAN2 generator export"):
        load_exported(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing")
