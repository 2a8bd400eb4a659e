"""SSD's box arithmetic, written from the SSD paper (Liu et al. 2016, eq. 2) and the facts of ml-cvnets' SSD
matcher, loss and post-processing (cvnets/misc/match_prior.py, third_party/ssd_utils.py,
loss_fn/detection/ssd_multibox_loss.py, models/detection/ssd.py):

- anchors are (cx, cy, w, h) fractions of the image (arch/detection.py makes them); ground truth boxes are
  x1, y1, x2, y2 fractions;
- matching: each anchor takes the ground truth box it overlaps most; each box also takes its own best anchor,
  whatever the overlap; an anchor whose best IoU is under 0.5 is background (label 0);
- offsets: ((gx - ax) / aw / 0.1, (gy - ay) / ah / 0.1, log(gw / aw) / 0.2, log(gh / ah) / 0.2) (center
  variance 0.1, size variance 0.2);
- loss: smooth L1 summed over the positive anchors' offsets plus cross-entropy summed over the positives and
  the hardest negatives (3 per positive, ranked by their background loss), both divided by the number of
  positives (at least 1);
- detections: softmax scores; per class the anchors above 0.01, at most 400 of them, then non-maximum
  suppression at IoU 0.5 over all classes (torchvision's batched_nms) and the 200 best per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_iou

CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
IOU_THRESHOLD = 0.5
NEG_POS_RATIO = 3
CONF_THRESHOLD = 0.01
TOP_K = 400
NMS_IOU = 0.5
PER_IMAGE = 200


def center_to_corner(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat((boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2), dim=-1)


def corner_to_center(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), dim=-1)


def encode(gt_center: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Ground truth boxes (center form) as offsets from their anchors (center form)."""
    centers = (gt_center[..., :2] - anchors[..., :2]) / anchors[..., 2:] / CENTER_VARIANCE
    sizes = torch.log(gt_center[..., 2:] / anchors[..., 2:]) / SIZE_VARIANCE
    return torch.cat((centers, sizes), dim=-1)


def decode(offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Predicted offsets back to boxes in center form: `encode`'s inverse."""
    centers = offsets[..., :2] * CENTER_VARIANCE * anchors[..., 2:] + anchors[..., :2]
    sizes = torch.exp(offsets[..., 2:] * SIZE_VARIANCE) * anchors[..., 2:]
    return torch.cat((centers, sizes), dim=-1)


def match(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, anchors: torch.Tensor,
          iou_threshold: float = IOU_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets [A, 4], labels [A]) for one image: `gt_boxes` [G, 4] corner-form fractions, `gt_labels` [G] in
    1..K, `anchors` [A, 4] center form. No box: every anchor is background, its offsets zero."""
    n = anchors.shape[0]
    if gt_boxes.numel() == 0:
        return torch.zeros(n, 4), torch.zeros(n, dtype=torch.int64)
    ious = box_iou(gt_boxes, center_to_corner(anchors))  # [G, A]
    best_iou, best_gt = ious.max(dim=0)  # per anchor
    best_anchor = ious.argmax(dim=1)  # per box
    # Every box keeps its best anchor, whatever the overlap (a later box wins an anchor two boxes share).
    for g, a in enumerate(best_anchor.tolist()):
        best_gt[a] = g
    best_iou[best_anchor] = 2.0
    labels = gt_labels[best_gt].clone()
    labels[best_iou < iou_threshold] = 0
    offsets = encode(corner_to_center(gt_boxes[best_gt]), anchors)
    offsets[labels == 0] = 0.0
    return offsets, labels


def hard_negatives(background_loss: torch.Tensor, labels: torch.Tensor,
                   ratio: int = NEG_POS_RATIO) -> torch.Tensor:
    """[B, A] mask: every positive anchor and, per image, the `ratio` x positives negatives of highest
    background loss."""
    positive = labels > 0
    quota = positive.sum(dim=1, keepdim=True) * ratio
    loss = background_loss.masked_fill(positive, float("-inf"))
    rank = loss.argsort(dim=1, descending=True).argsort(dim=1)
    return positive | (rank < quota)


def ssd_loss(offsets: torch.Tensor, logits: torch.Tensor, target_offsets: torch.Tensor, labels: torch.Tensor,
             ratio: int = NEG_POS_RATIO, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """(total, box regression, classification), each a sum over the batch divided by its positive anchors."""
    logits = logits.float()
    positive = labels > 0
    n_pos = positive.sum().clamp(min=1)
    reg = F.smooth_l1_loss(offsets.float()[positive], target_offsets[positive], reduction="sum")
    with torch.no_grad():
        background = -F.log_softmax(logits, dim=2)[..., 0]
        chosen = hard_negatives(background, labels, ratio)
    cls = F.cross_entropy(logits[chosen], labels[chosen], reduction="sum", label_smoothing=label_smoothing)
    return (reg + cls) / n_pos, reg / n_pos, cls / n_pos


@torch.no_grad()
def detections(offsets: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor, conf: float = CONF_THRESHOLD,
               top_k: int = TOP_K, nms_iou: float = NMS_IOU, per_image: int = PER_IMAGE) -> list[dict]:
    """Per image: boxes [D, 4] (corner-form fractions of the image, clipped to it), scores [D] and labels [D]
    (1..K), after the score threshold, the per-class top-k and non-maximum suppression."""
    probs = logits.float().softmax(dim=-1)[..., 1:]
    boxes = center_to_corner(decode(offsets.float(), anchors)).clamp_(0.0, 1.0)
    out = []
    for b in range(probs.shape[0]):
        a_idx, c_idx = (probs[b] > conf).nonzero(as_tuple=True)
        scores = probs[b][a_idx, c_idx]
        # per class, its top_k anchors: order by class, then by score (descending), and rank within the class
        order = torch.argsort(c_idx.double() * 2.0 - scores.double())
        a_idx, c_idx, scores = a_idx[order], c_idx[order], scores[order]
        rank = torch.arange(len(c_idx), device=c_idx.device) - torch.searchsorted(c_idx, c_idx)
        keep = rank < top_k
        a_idx, c_idx, scores = a_idx[keep], c_idx[keep], scores[keep]
        chosen = boxes[b][a_idx]
        kept = batched_nms(chosen, scores, c_idx, nms_iou)[:per_image]
        out.append({"boxes": chosen[kept], "scores": scores[kept], "labels": c_idx[kept] + 1})
    return out
