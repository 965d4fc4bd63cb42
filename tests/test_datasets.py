"""Benchmark loaders on tiny fixtures in each official format (tests/fixtures/), and on coco-mini."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from lensgraph.pipeline.evaluation.datasets import Dataset, load_dataset
from lensgraph.pipeline.errors import LensgraphError

FIX = Path(__file__).parent / "fixtures"


# ---- CIRCO -----------------------------------------------------------------------------------


def test_circo_val():
    ds = load_dataset("circo", FIX / "circo", FIX / "circo")
    assert (ds.name, ds.split, ds.task) == ("circo", "val", "cir")
    assert len(ds.queries) == 2
    q = ds.queries[0]
    assert q.id == "0" and q.reference == "85932"
    assert q.text == "is held by a little girl on a chair"
    assert q.targets == ("9761", "489535", "57541")
    assert q.extra["target"] == "9761" and q.extra["shared_concept"] == "a teddy bear"
    # every COCO-named image of unlabeled2017, unpadded ids; notes.txt is ignored
    assert sorted(ds.images) == sorted(["85932", "9761", "489535", "57541", "281438", "251485"])
    assert ds.images["9761"].name == "000000009761.jpg"


def test_circo_test_split_has_no_targets():
    annotations = FIX / "circo" / "annotations" / "test.json"
    ds = load_dataset("circo", annotations, FIX / "circo" / "COCO2017_unlabeled", "test")
    assert [q.targets for q in ds.queries] == [(), ()]
    assert "target" not in ds.queries[0].extra
    assert ds.queries[1].reference == "251485"


def test_circo_images_folder_variants():
    folder = FIX / "circo" / "COCO2017_unlabeled" / "unlabeled2017"
    for images in (FIX / "circo", folder.parent, folder):
        assert len(load_dataset("circo", FIX / "circo", images).images) == 6


def test_circo_text_options():
    concept = load_dataset("circo", FIX / "circo", FIX / "circo", text="concept")
    assert concept.queries[0].text == "a teddy bear is held by a little girl on a chair"
    with pytest.raises(LensgraphError, match="text='both'"):
        load_dataset("circo", FIX / "circo", FIX / "circo", text="both")


def test_circo_missing_files(tmp_path):
    with pytest.raises(LensgraphError, match=r"annotations.*val\.json.*miccunifi/CIRCO"):
        load_dataset("circo", tmp_path, tmp_path)
    with pytest.raises(LensgraphError, match="unlabeled2017"):
        load_dataset("circo", FIX / "circo", tmp_path)


# ---- CIRR ------------------------------------------------------------------------------------


def test_cirr_val():
    ds = load_dataset("cirr", FIX / "cirr", FIX / "cirr" / "img_raw", "val")
    assert (ds.split, ds.task, len(ds.queries), len(ds.images)) == ("val", "cir", 3, 6)
    q = ds.queries[1]
    assert q.id == "12062" and q.extra["pairid"] == 12062
    assert q.text == "Fewer paper towels per pack"
    assert q.reference == "dev-63-0-img1" and q.targets == ("dev-430-3-img0",)
    assert q.extra["target"] == "dev-430-3-img0"
    assert q.extra["target_soft"] == {"dev-430-3-img0": 1.0, "dev-1028-1-img1": -1.0}
    assert len(q.subset) == 6 and q.reference in q.subset
    assert ds.images["dev-244-0-img0"] == FIX / "cirr" / "img_raw" / "dev" / "dev-244-0-img0.png"
    empty = ds.queries[2]
    assert empty.text == "the same image" and empty.extra["empty_caption"]


def test_cirr_test_split_and_image_root_variants():
    for images in (FIX / "cirr", FIX / "cirr" / "img_raw"):
        ds = load_dataset("cirr", FIX / "cirr" / "captions" / "cap.rc2.test1.json", images, "test")
        assert ds.split == "test1" and len(ds.images) == 6
        assert all(q.targets == () for q in ds.queries)
        assert ds.queries[0].id == "12063" and ds.queries[0].subset[0] == "test1-147-1-img1"


def test_cirr_errors(tmp_path):
    with pytest.raises(LensgraphError, match=r"cap\.rc2\.val\.json.*Cuberick-Orion/CIRR"):
        load_dataset("cirr", tmp_path, tmp_path)
    with pytest.raises(LensgraphError, match="CIRR split"):
        load_dataset("cirr", FIX / "cirr", FIX / "cirr", "dev1")
    with pytest.raises(LensgraphError, match="NLVR2"):
        load_dataset("cirr", FIX / "cirr", tmp_path)


# ---- FashionIQ -------------------------------------------------------------------------------


def test_fashioniq_val_all_categories(caplog):
    with caplog.at_level(logging.WARNING, logger="lensgraph"):
        ds = load_dataset("fashioniq", FIX / "fashioniq", FIX / "fashioniq")
    assert (ds.task, len(ds.queries), ds.keep_reference, ds.recall_ks) == ("cir", 4, True, (10, 50))
    assert [q.kind for q in ds.queries] == ["dress", "dress", "shirt", "toptee"]
    assert [q.id for q in ds.queries] == ["dress-0", "dress-1", "shirt-0", "toptee-0"]
    q = ds.queries[0]
    assert q.text == "is solid black with no sleeves and is black with straps"
    assert q.reference == "B003FGW7MK" and q.targets == ("B008BHCT58",)
    assert ds.queries[1].text == "Is longer and has a floral print"  # '?', '.', spaces stripped
    # one gallery per category (its split file), minus the one image not on disk (warned)
    assert list(ds.parts) == ["dress", "shirt", "toptee"]
    assert sorted(ds.parts["dress"].images) == ["B003FGW7MK", "B008BHCT58", "B00BPD4N5E"]
    assert [q.id for q in ds.parts["shirt"].queries] == ["shirt-0"]
    assert len(ds.images) == 7 and "B00MISSING1" not in ds.images
    assert "gallery images are missing" in caplog.text and "B00MISSING1" not in ds.images
    assert ds.images["B003FGW7MK"].suffix == ".png"


def test_fashioniq_options():
    ds = load_dataset("fashioniq", FIX / "fashioniq", FIX / "fashioniq" / "images", categories="dress", capitalize=True)
    assert [q.kind for q in ds.queries] == ["dress", "dress"] and not ds.parts and ds.name == "fashioniq-dress"
    assert ds.queries[0].text == "Is solid black with no sleeves and is black with straps"
    assert sorted(ds.images) == ["B003FGW7MK", "B008BHCT58", "B00BPD4N5E"]
    test = load_dataset("fashioniq", FIX / "fashioniq", FIX / "fashioniq", "test", categories=["shirt"])
    assert test.queries[0].targets == () and test.queries[0].reference == "B00E9AWYWO"
    with pytest.raises(LensgraphError, match="category 'skirt'"):
        load_dataset("fashioniq", FIX / "fashioniq", FIX / "fashioniq", categories=["skirt"])


def test_fashioniq_missing(tmp_path):
    with pytest.raises(LensgraphError, match=r"cap\.dress\.val\.json.*fashion-iq"):
        load_dataset("fashioniq", tmp_path, tmp_path)


# ---- Flickr30K / MSCOCO (Karpathy) ------------------------------------------------------------


def test_flickr30k_test_split():
    ds = load_dataset("flickr30k", FIX / "karpathy", FIX / "karpathy" / "flickr30k-images")
    assert (ds.name, ds.split, ds.task) == ("flickr30k", "test", "t2i")
    assert len(ds.queries) == 10 and sorted(ds.images) == ["1007129816", "1009434119"]
    q = ds.queries[0]
    assert (q.id, q.reference, q.targets) == ("5", None, ("1007129816",))
    assert q.text == "The man with pierced ears is wearing glasses and an orange hat."
    karpathy = FIX / "karpathy" / "dataset_flickr30k.json"
    val = load_dataset("flickr30k", karpathy, FIX / "karpathy" / "flickr30k-images", "val")
    assert len(val.queries) == 5 and list(val.images) == ["1018148011"]


def test_mscoco_cocoid_filepath_and_caption_cap():
    ds = load_dataset("mscoco", FIX / "karpathy" / "dataset_coco.json", FIX / "karpathy" / "coco")
    assert (ds.name, len(ds.queries)) == ("mscoco", 5)  # the 6th caption is dropped by default
    assert ds.images == {"391895": FIX / "karpathy" / "coco" / "val2014" / "COCO_val2014_000000391895.jpg"}
    assert ds.queries[0].id == "770337" and ds.queries[0].targets == ("391895",)
    assert ds.queries[0].text == "A man with a red helmet on a small moped on a dirt road."
    every = load_dataset("mscoco", FIX / "karpathy", FIX / "karpathy" / "coco" / "val2014", max_captions=None)
    assert len(every.queries) == 6 and len(every.images) == 1  # images folder given as val2014 itself


def test_karpathy_missing(tmp_path):
    with pytest.raises(LensgraphError, match=r"dataset_coco\.json.*karpathy"):
        load_dataset("mscoco", tmp_path, tmp_path)
    with pytest.raises(LensgraphError, match="flickr30k test images"):
        load_dataset("flickr30k", FIX / "karpathy", tmp_path)
    with pytest.raises(LensgraphError, match="no images in split 'restval'.*test, train, val"):
        load_dataset("flickr30k", FIX / "karpathy", FIX / "karpathy", "restval")


# ---- VisDial (ChatIR protocol) ---------------------------------------------------------------


def test_visdial_chatir():
    ds = load_dataset("visdial", FIX / "visdial", FIX / "visdial" / "data")
    assert (ds.task, len(ds.queries), len(ds.images)) == ("chat", 2, 4)
    q = ds.queries[1]
    assert q.id == "1" and q.reference is None and q.targets == ("000000284024",)
    assert q.dialogue[0] == "a woman sits on a bench holding a guitar in her lap"
    assert len(q.dialogue) == 4 and q.text == q.dialogue[-1] == "does she have a collection bucket? no"
    assert ds.images["000000000008"] == FIX / "visdial" / "data" / "unlabeled2017" / "000000000008.jpg"


def test_visdial_files_given_directly(tmp_path):
    # dialogues and search space anywhere, images flattened into one folder: still resolves
    flat = tmp_path / "flat"
    shutil.copytree(FIX / "visdial" / "data" / "unlabeled2017", flat)
    ds = load_dataset(
        "visdial",
        FIX / "visdial" / "dialogues" / "VisDial_v1.0_queries_val.json",
        flat,
        search_space=FIX / "visdial" / "ChatIR_Protocol" / "Search_Space_val_50k.json",
    )
    assert len(ds.images) == 4 and ds.images["000000185565"] == flat / "000000185565.jpg"
    alone = tmp_path / "alone" / "VisDial_v1.0_queries_val.json"
    alone.parent.mkdir()
    shutil.copy(FIX / "visdial" / "dialogues" / "VisDial_v1.0_queries_val.json", alone)
    with pytest.raises(LensgraphError, match=r"search space not found.*Search_Space_val_50k\.json.*levymsn/ChatIR"):
        load_dataset("visdial", alone, flat)
    with pytest.raises(LensgraphError, match="search-space images not found"):
        load_dataset("visdial", FIX / "visdial", tmp_path / "none")


# ---- load_dataset dispatch -------------------------------------------------------------------


def test_unknown_dataset_and_conflicting_alias(coco):
    with pytest.raises(LensgraphError, match="Unknown dataset 'cifar'"):
        load_dataset("cifar", FIX, FIX)
    with pytest.raises(LensgraphError, match="conflicts"):
        load_dataset("coco-mini-t2i", coco, coco, kind="cir")


# ---- coco-mini (the real files) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_cir(coco) -> Dataset:
    return load_dataset("coco-mini-cir", coco, coco)


def test_coco_mini_cir(coco, coco_cir):
    ds = coco_cir
    assert (ds.name, ds.split, ds.task) == ("coco-mini-cir", "dev", "cir")
    assert len(ds.queries) == 176 and len(ds.images) == 159 and len(ds.captions) == 159
    raw = json.loads((coco / "cir_dev.json").read_text())
    for q, item in zip(ds.queries, raw, strict=True):
        assert q.id == str(item["id"]) and q.text == item["relative_caption"] and q.kind == item["kind"]
        assert q.reference == str(item["reference_img_id"]) and q.reference in ds.images
        assert q.targets == tuple(str(i) for i in item["gt_img_ids"])
        assert q.extra["target"] == str(item["target_img_id"]) == q.targets[0]
        assert q.reference not in q.targets
    assert {q.kind for q in ds.queries} == {"add", "remove", "replace"}
    assert ds.images["790"] == coco / "images" / "000000000790.jpg"
    assert ds.captions["139"].startswith("A woman stands in the dining area")


def test_coco_mini_t2i(coco):
    ds = load_dataset("coco-mini", coco / "t2i_dev.json", coco / "images", kind="t2i")
    assert (ds.name, ds.task, len(ds.queries), len(ds.images)) == ("coco-mini-t2i", "t2i", 62, 159)
    assert ds.queries[0].targets == ("790",) and ds.queries[0].reference is None
    assert ds.queries[0].text == "A group of people are gathered around a table with cake on it."
    assert all(q.targets[0] in ds.images for q in ds.queries)
    # the query captions are held out of the gallery captions
    assert all(q.text not in ds.captions[q.targets[0]] for q in ds.queries)


def test_coco_mini_missing_split(coco):
    with pytest.raises(LensgraphError, match=r"cir_heldout\.json"):
        load_dataset("coco-mini", coco, coco, split="heldout")
