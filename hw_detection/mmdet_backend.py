"""The ``mmdet`` backend: MMDetection 3.3's CenterNet on the same data, scored the same way.

The model is MMDetection's ``CenterNet`` (ResNet-18, ``CTResNetNeck`` with or without DCNv2,
``CenterNetHead`` with Gaussian focal, L1 size and L1 offset losses at weights 1, 0.1, 1), as
the course's ``centernet_resnet18[_dcnv2]_140e_coco`` config, with the number of classes, the
input size, the schedule (AdamW + one-cycle, as the native backend) and no pretrained weights.
By default the neck is ``CTResNetSkipNeck``, ``CTResNetNeck`` with the native backend's skip
connections from the backbone (registered here into MMDetection's model registry), so that
both backends train the same network; ``--no-skips`` gives ``CTResNetNeck`` exactly.

It is trained by mmengine's ``Runner`` (:func:`train_mmdet`) from COCO json files written from
the same VOC loader (``<run>/mmdet/train.json``). Augmentation: resize to ``size x size``,
random scale 0.6-1.4 about the centre and shift 15 % (``CentredRandomAffine``, registered
here), flip, photometric distortion. The Runner's config is kept as ``mmdet_config.py``; the
trained network's state dict goes into the run's ``model.pt`` like the native one's
(:mod:`hw_detection.models`), and :class:`MMDetDetector` returns its boxes in each image's own
pixels like the native detector.

MMDetection, mmcv and mmengine are imported inside the functions, only when this backend is
used: without them every other command works, and this backend stops with one line saying how
to install them (the ``mmdet`` extra and mmcv 2.1.0 built for this torch:
``bash scripts/build_mmcv.sh``).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import runs
from core.errors import UserError

from .data import DetectionData, to_tensor

CONFIG_FILE = "mmdet_config.py"
SKIP_NECK = "CTResNetSkipNeck"
CENTRED_AFFINE = "CentredRandomAffine"
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def require_mmdet() -> None:
    """Import MMDetection, or stop with one sentence saying how to install it."""
    try:
        import mmcv  # noqa: F401
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
        from mmcv.ops import modulated_deform_conv2d  # noqa: F401  (the compiled ops are there)
    except ImportError as exc:
        raise UserError(f"--backend mmdet needs MMDetection 3.3 and mmcv 2.1.0 ({exc}); install them with "
                        "'bash scripts/build_mmcv.sh' (see the README)") from None
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    _register_skip_neck()
    _register_centred_affine()


def _register_skip_neck() -> None:
    """Add ``CTResNetSkipNeck`` to MMDetection's model registry (once)."""
    from mmdet.models.necks import CTResNetNeck
    from mmdet.registry import MODELS
    from torch import nn

    if MODELS.get(SKIP_NECK) is not None:
        return

    class CTResNetSkipNeck(CTResNetNeck):
        """``CTResNetNeck`` plus the native backend's skip connections
        (:class:`core.detection.centernet.CenterNet` with ``skips=True``): after each upsampling
        block the backbone's feature map of the same stride (16, 8, 4), through a 1x1 conv and
        BN, is added before the ReLU; with the same weights it computes what the native neck
        does."""

        def __init__(self, in_channels: int, num_deconv_filters, num_deconv_kernels, use_dcn: bool = True,
                     skip_channels=(256, 128, 64), init_cfg=None):
            super().__init__(in_channels, num_deconv_filters, num_deconv_kernels, use_dcn, init_cfg)
            self.laterals = nn.ModuleList(
                nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
                for c_in, c_out in zip(skip_channels, num_deconv_filters))

        def forward(self, x):
            features = x[-1]
            for i, lateral in enumerate(self.laterals):
                conv, upsample = self.deconv_layers[2 * i], self.deconv_layers[2 * i + 1]
                features = upsample(conv(features), activate=False)     # conv, BN; the ReLU after the sum
                features = torch.relu(features + lateral(x[-2 - i]))
            return features,

    MODELS.register_module(name=SKIP_NECK, module=CTResNetSkipNeck)


def _register_centred_affine() -> None:
    """Add ``CentredRandomAffine`` to MMDetection's transform registry (once)."""
    from mmdet.datasets.transforms import RandomAffine
    from mmdet.registry import TRANSFORMS

    if TRANSFORMS.get(CENTRED_AFFINE) is not None:
        return

    class CentredRandomAffine(RandomAffine):
        """``RandomAffine`` whose warp scales, rotates and shears about the image centre (the
        fixed point of a zero shift), as the native backend's augmentation does. MMDetection
        3.3's own ``RandomAffine`` warps about the top-left corner (translate @ shear @ rotate
        @ scale): a zoom-out leaves the picture in that corner and a zoom-in cuts off only the
        right and bottom."""

        def _get_random_homography_matrix(self, height: int, width: int) -> np.ndarray:
            warp = super()._get_random_homography_matrix(height, width)
            to_centre = self._get_translation_matrix(-width / 2, -height / 2)
            back = self._get_translation_matrix(width / 2, height / 2)
            return back @ warp @ to_centre

    TRANSFORMS.register_module(name=CENTRED_AFFINE, module=CentredRandomAffine)


def model_config(num_classes: int, dcn: bool, skips: bool = True) -> dict:
    """MMDetection's CenterNet-ResNet18 for ``num_classes`` classes, randomly initialised; with
    ``skips`` its neck is ``CTResNetSkipNeck``, the network of the native backend's default."""
    neck = SKIP_NECK if skips else "CTResNetNeck"
    return dict(
        type="CenterNet",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True),
        backbone=dict(type="ResNet", depth=18, norm_eval=False, norm_cfg=dict(type="BN"), init_cfg=None),
        neck=dict(type=neck, in_channels=512, num_deconv_filters=(256, 128, 64),
                  num_deconv_kernels=(4, 4, 4), use_dcn=dcn),
        bbox_head=dict(type="CenterNetHead", num_classes=num_classes, in_channels=64, feat_channels=64,
                       loss_center_heatmap=dict(type="GaussianFocalLoss", loss_weight=1.0),
                       loss_wh=dict(type="L1Loss", loss_weight=0.1),
                       loss_offset=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=None,
        test_cfg=dict(topk=100, local_maximum_kernel=3, max_per_img=100))


def build_model(num_classes: int, dcn: bool, skips: bool = True) -> torch.nn.Module:
    require_mmdet()
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    model = MODELS.build(ConfigDict(model_config(num_classes, dcn, skips)))  # attribute access, as from a config file
    model.init_weights()
    return model


def write_coco(data: DetectionData, folder: Path, name: str) -> Path:
    """``data`` as a COCO json (image paths absolute; in-memory images written as PNG first)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, sample in enumerate(data.samples):
        if isinstance(sample.image, np.ndarray):
            path = folder / "images" / f"{name}_{image_id}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(sample.image).save(path)
            height, width = sample.image.shape[:2]
        else:
            path = Path(sample.image).resolve()
            with Image.open(path) as img:
                width, height = img.size
        images.append({"id": image_id, "file_name": str(path), "width": width, "height": height})
        for box, label in zip(sample.boxes.tolist(), sample.labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(data.class_names)]
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def runner_config(args: argparse.Namespace, train: DetectionData, work_dir: Path) -> dict:
    """The mmengine Runner config: data, model, AdamW + one-cycle, no validation loop (the
    run is scored afterwards by the same code as the native backend)."""
    size, batch = args.size, args.batch_size
    n_train = len(train) if not args.limit_batches else min(len(train), args.limit_batches * batch)
    steps = args.epochs * math.ceil(n_train / batch)
    pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", scale=(size, size), keep_ratio=False),
        dict(type=CENTRED_AFFINE, max_rotate_degree=0, max_translate_ratio=0.15, scaling_ratio_range=(0.6, 1.4),
             max_shear_degree=0, border_val=(0, 0, 0)),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion", brightness_delta=32, contrast_range=(0.7, 1.3),
             saturation_range=(0.7, 1.3), hue_delta=5),
        dict(type="PackDetInputs"),
    ]
    dataset = dict(type="CocoDataset", data_root="", ann_file=str(write_coco(train, work_dir, "train")),
                   data_prefix=dict(img=""), metainfo=dict(classes=train.class_names), pipeline=pipeline,
                   filter_cfg=dict(filter_empty_gt=False), indices=n_train)
    return dict(
        model=model_config(len(train.class_names), args.dcn, skips=not args.no_skips),
        work_dir=str(work_dir),
        train_dataloader=dict(batch_size=batch, num_workers=args.num_workers, dataset=dataset,
                              sampler=dict(type="DefaultSampler", shuffle=True), collate_fn=dict(type="pseudo_collate")),
        train_cfg=dict(by_epoch=True, max_epochs=args.epochs),
        optim_wrapper=dict(optimizer=dict(type="AdamW", lr=args.lr, weight_decay=1e-4)),
        param_scheduler=[dict(type="OneCycleLR", eta_max=args.lr, total_steps=steps, pct_start=0.1,
                              by_epoch=False)],
        default_hooks=dict(timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=10),
                           param_scheduler=dict(type="ParamSchedulerHook"),
                           checkpoint=dict(type="CheckpointHook", interval=args.epochs),
                           sampler_seed=dict(type="DistSamplerSeedHook")),
        default_scope="mmdet",
        randomness=dict(seed=args.seed),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo")),
        log_processor=dict(by_epoch=True),
        launcher="none",
    )


def history_from_scalars(work_dir: Path, path: Path) -> list[dict]:
    """Per-epoch means of the losses mmengine logged (``vis_data/scalars.json``) as history.csv."""
    rows: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for log in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if "epoch" in entry and "loss" in entry:
                for key in ("loss", "loss_center_heatmap", "loss_wh", "loss_offset", "lr"):
                    if key in entry:
                        rows[entry["epoch"]][key].append(entry[key])
    history = [{"epoch": epoch, **{(k if k == "lr" else f"train_{k}"): float(np.mean(v)) for k, v in values.items()}}
               for epoch, values in sorted(rows.items())]
    if history:
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    return history


def train_mmdet(args: argparse.Namespace, train: DetectionData, val: DetectionData,
                run: runs.RunDir) -> tuple[torch.nn.Module, list[dict]]:
    """Train with mmengine's Runner (its files under ``run/mmdet``, its config as
    ``mmdet_config.py``, the per-epoch losses as ``history.csv``); returns the trained network
    and the history (the caller saves the model file)."""
    require_mmdet()
    from mmengine.config import Config
    from mmengine.runner import Runner

    if args.weights or args.resume:
        raise UserError("--backend mmdet: --weights and --resume are for the native backend")
    run.start(args)
    work_dir = Path(run.path) / "mmdet"
    cfg = Config(runner_config(args, train, work_dir))
    cfg.dump(str(run / CONFIG_FILE))
    runner = Runner.from_cfg(cfg)
    runner.train()
    history = history_from_scalars(work_dir, run / "history.csv")
    return runner.model, history


class MMDetDetector:
    """Detections of an MMDetection CenterNet in the original images' pixels (the same
    resize as training; ``border`` and ``scale_factor`` set so mmdet maps boxes back)."""

    backend = "mmdet"

    def __init__(self, model: torch.nn.Module, size: int, class_names, device="cpu"):
        self.model, self.size, self.class_names = model.to(device).eval(), size, tuple(class_names)

    @torch.no_grad()
    def predict(self, arrays, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        from mmdet.structures import DetDataSample

        results = []
        for start in range(0, len(arrays), batch_size):
            inputs, samples = [], []
            for array in arrays[start:start + batch_size]:
                height, width = array.shape[:2]
                image = (to_tensor(array, self.size) * 255).round().to(torch.uint8)
                inputs.append(image.flip(0))  # BGR, as mmcv reads images; the preprocessor flips back
                sample = DetDataSample()
                sample.set_metainfo(dict(img_shape=(self.size, self.size), ori_shape=(height, width),
                                         scale_factor=(self.size / width, self.size / height),
                                         border=(0, self.size, 0, self.size)))
                samples.append(sample)
            for out in self.model.test_step({"inputs": inputs, "data_samples": samples}):
                found = out.pred_instances
                results.append({"boxes": found.bboxes.float().cpu(), "scores": found.scores.float().cpu(),
                                "labels": found.labels.long().cpu()})
        return results
