"""Object detection shared by the detection homeworks (hard hats, licence plates).

Modules:

- :mod:`core.detection.data`: :class:`DetectionSample` (an image and its boxes), the
  :class:`DetectionDataset` every detector trains on, and its collate function.
- :mod:`core.detection.augment`: the box-aware resize and augmentation (albumentations).
- :mod:`core.detection.centernet`: CenterNet (Zhou et al., 2019, "Objects as Points"):
  ResNet-18 + deconvolution neck (optional DCNv2) + heatmap/size/offset heads, target
  encoding with the Gaussian radius rule, Gaussian focal loss, L1 losses, decoding, and
  :class:`CenterNetTask` for :class:`core.trainer.Trainer`.
- :mod:`core.detection.evaluate`: mAP@0.5 and COCO mAP@[.5:.95] (torchmetrics, pycocotools
  backend), per-class precision / recall / F1 at IoU 0.5.

Boxes everywhere are ``(x1, y1, x2, y2)`` in pixels of the image they belong to, float32;
labels are class indices ``0..C-1``. A target is ``{"boxes": (N, 4), "labels": (N,)}``, a
prediction adds ``"scores": (N,)``.
"""
