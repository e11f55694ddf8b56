"""VolumeTranslationDataModule: splits by patient, unpaired sets disjoint, whole volumes for evaluation."""
import json
from types import SimpleNamespace

import pytest
import torch

from data.batches import is_padding
from data.errors import VolumeError
from data.volumes import VolumeTranslationDataModule, split_patients


def test_split_patients_is_disjoint_deterministic_and_complete():
    ids = [f"p{i:02d}" for i in range(20)]
    a = split_patients(ids, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert a == split_patients(list(reversed(ids)), val_fraction=0.1, test_fraction=0.2, seed=1)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 2, 4)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    with pytest.raises(ValueError, match="non-empty train"):
        split_patients(ids[:2], val_fraction=0.5, test_fraction=0.5, seed=0)


def test_unpaired_ct_to_mr(phantom_dir):
    dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="mr", paired=False, patch_size=(32, 32),
                                     batch_size=4, val_fraction=0.2, test_fraction=0.2, seed=0)
    dm.setup("fit")
    train = dm._datasets["train"]
    ct_patients = {r.patient_id for r in train.a.records}
    mr_patients = {r.patient_id for r in train.b.records}
    assert ct_patients and mr_patients and not ct_patients & mr_patients, "unpaired sets use different patients"
    batch = next(iter(dm.train_dataloader()))
    assert batch["ct"].shape == (4, 1, 32, 32) and batch["mr"].shape == (4, 1, 32, 32)
    assert batch["ct"].min() >= -1 and batch["ct"].max() <= 1
    val = list(dm.val_dataloader())
    held = {b["patient"][0] for b in val}
    assert held and not held & (ct_patients | mr_patients), "validation patients never seen in training"
    assert val[0]["ct"].shape == (1, 1, 64, 56, 24) and val[0]["mr"].shape == (1, 1, 64, 56, 24)
    dm.setup("test")
    test = {b["patient"][0] for b in dm.test_dataloader()}
    assert test and not test & held and not test & (ct_patients | mr_patients)


def test_paired_ct_to_pet_with_lesion_masks_and_splits_file(phantom_dir, tmp_path):
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": ["p0", "p1", "p2", "p3"], "val": ["p4"], "test": ["p5"]}))
    dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="pet", paired=True, splits=str(splits),
                                     mask_keys=["lesion_mask"], mode="2.5d", slices=3, batch_size=2, augment=True)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["ct"].shape[1] == 3 and b["pet"].shape[1] == 3 and b["lesion_mask"].shape[1] == 1
    assert set(b["patient"]) <= {"p0", "p1", "p2", "p3"}
    v = next(iter(dm.val_dataloader()))
    assert v["patient"] == ["p4"] and "lesion_mask" in v and v["pet"].dim() == 5
    assert torch.all((v["lesion_mask"] == 0) | (v["lesion_mask"] == 1))


def test_bad_splits_and_keys(phantom_dir, tmp_path):
    bad = tmp_path / "splits.json"
    bad.write_text(json.dumps({"train": ["p0", "p1"], "val": ["p1"], "test": ["p5"]}))
    with pytest.raises(VolumeError, match=r"splits\.json.*p1 is in both"):
        VolumeTranslationDataModule(str(phantom_dir), splits=str(bad)).setup("fit")
    bad.write_text("{not json")
    with pytest.raises(VolumeError, match=r"splits\.json: cannot read"):
        VolumeTranslationDataModule(str(phantom_dir), splits=str(bad)).setup("fit")
    with pytest.raises(ValueError, match="source/target"):
        VolumeTranslationDataModule(str(phantom_dir), source="xray")
    with pytest.raises(VolumeError, match="no patient folder"):
        VolumeTranslationDataModule(str(tmp_path), source="ct", target="mr").setup("fit")


def _fake_trainer(rank: int, world: int, *, distributed_sampler: bool = False) -> SimpleNamespace:
    return SimpleNamespace(global_rank=rank, world_size=world, current_epoch=0,
                           _accelerator_connector=SimpleNamespace(use_distributed_sampler=distributed_sampler))


def _slices(loader) -> list[list[tuple[str, str, float]]]:
    """Per batch: (CT patient, MR partner, CT sample sum) of each sample, enough to tell samples apart."""
    return [[(pa, pb, round(float(x.double().sum()), 4)) for pa, pb, x in zip(b["patient_a"], b["patient_b"], b["ct"])]
            for b in loader]


def test_ranks_get_blocks_of_the_single_process_batches(phantom_dir):
    kw = dict(source="ct", target="mr", paired=False, patch_size=(32, 32), val_fraction=0.34, test_fraction=0.0,
              seed=2, augment=False)
    single = VolumeTranslationDataModule(str(phantom_dir), batch_size=4, **kw)
    single.setup("fit")
    ref = _slices(single.train_dataloader())
    ref_val = [b["patient"][0] for b in single.val_dataloader()]
    assert len(ref_val) == 2
    ranks, vals = [], []
    for rank in (0, 1):
        dm = VolumeTranslationDataModule(str(phantom_dir), batch_size=4, **kw)  # the global batch
        dm.trainer = _fake_trainer(rank, 2)
        dm.setup("fit")
        ranks.append(_slices(dm.train_dataloader()))
        vals.append([b["patient"][0] for b in dm.val_dataloader()])
        dm.trainer = _fake_trainer(rank, 2, distributed_sampler=True)
        with pytest.raises(ValueError, match="use_distributed_sampler=False"):
            dm.train_dataloader()
        with pytest.raises(ValueError, match="use_distributed_sampler=False"):
            dm.val_dataloader()
    assert len(ranks[0]) == len(ranks[1]) == len(ref)
    for t, batch in enumerate(ref):
        assert ranks[0][t] + ranks[1][t] == batch and ranks[0][t] == batch[:2]
    assert vals == [ref_val[0:1], ref_val[1:2]]  # each held-out patient on exactly one rank
    lonely = VolumeTranslationDataModule(str(phantom_dir), batch_size=2, **{**kw, "val_fraction": 0.1})
    lonely.setup("fit")
    shares = []
    for rank in (0, 1):  # 1 validation patient, 2 ranks: rank 1 runs the epoch on a padding batch
        lonely.trainer = _fake_trainer(rank, 2)
        shares.append([(b["patient"][0], is_padding(b)) for b in lonely.val_dataloader()])
    assert shares[0][0][1] is False and shares[1] == [(shares[0][0][0], True)]


def test_checkpoint_records_the_mean_training_mr_window(phantom_dir, tmp_path):
    import lightning as L
    import nibabel as nib
    import numpy as np

    dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="mr", patch_size=(32, 32), batch_size=2,
                                     val_fraction=0.2, test_fraction=0.2, seed=0, augment=False)
    assert dm.state_dict() == {}  # nothing trained on yet
    dm.setup("fit")
    mr_patients = [r.patient_id for r in dm._datasets["train"].b.records]
    lows, highs = zip(*(np.percentile(np.asarray(nib.load(str(phantom_dir / p / "mr.nii.gz")).get_fdata(),
                                                 dtype=np.float32), [0.5, 99.5]) for p in mr_patients))
    state = dm.state_dict()  # every MR training volume has 24 slices: equal weights
    assert state["mr_window"] == pytest.approx([np.mean(lows), np.mean(highs)], rel=1e-5)

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch["mr"].mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(Probe(), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    saved = torch.load(tmp_path / "x.ckpt", weights_only=True)["VolumeTranslationDataModule"]
    assert saved == state
    restored = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="mr")
    restored.load_state_dict(saved)
    assert restored.state_dict() == state  # a datamodule restored from a checkpoint keeps reporting it
    paired = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="pet", paired=True, batch_size=2)
    paired.setup("fit")
    assert paired.state_dict() == {}  # no MR: nothing to record


class _SeenProbe:
    """A one-parameter LightningModule (built lazily: Lightning imports only in the tests that train)."""

    @staticmethod
    def make():
        import lightning as L

        class Probe(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1))
                self.seen: list[tuple[int, list[float]]] = []

            def training_step(self, batch, batch_idx):
                self.seen.append((self.current_epoch, [round(float(x.double().sum()), 4) for x in batch["ct"]]))
                return (self.w - batch["ct"].mean()) ** 2

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Probe()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_lightning_resume_serves_exactly_the_remaining_samples(phantom_dir, tmp_path, workers):
    """End-of-epoch and mid-epoch checkpoints: the resumed run trains on exactly the samples the full run trained
    on after that point (Lightning starts the first loader iterator, and its workers, before ``set_epoch``)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(d, ckpt=None):
        L.seed_everything(0)
        model = _SeenProbe.make()
        dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="mr", patch_size=(32, 32),
                                         batch_size=2, val_fraction=0.2, test_fraction=0.2, seed=0, augment=True,
                                         num_workers=workers)
        saves = [ModelCheckpoint(dirpath=str(d), every_n_train_steps=4, save_top_k=-1, filename="step{step}"),
                 ModelCheckpoint(dirpath=str(d), every_n_epochs=1, save_top_k=-1, filename="epoch{epoch}")]
        trainer = L.Trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=0, accelerator="cpu", devices=1,
                            logger=False, callbacks=saves, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0)
        trainer.fit(model, datamodule=dm, ckpt_path=None if ckpt is None else str(ckpt))
        return model

    full = fit(tmp_path / "full")
    assert [e for e, _ in full.seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # after epoch 0 (its 3 batches of 2 consumed); 1 batch into epoch 1
    for name, done, loader in (("epochepoch=0.ckpt", 3, (0, 6)), ("stepstep=4.ckpt", 4, (1, 2))):
        state = torch.load(tmp_path / "full" / name, weights_only=True)
        assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [dict(zip(("epoch", "samples"), loader))]
        resumed = fit(tmp_path / name, ckpt=tmp_path / "full" / name)
        assert resumed.seen == full.seen[done:], name
        assert torch.equal(resumed.w, full.w)
