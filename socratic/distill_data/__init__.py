"""Dataset distillation via knowledge distillation (MKDT; Joshi, Ni & Mirzasoleiman, ICLR 2025).

A small synthetic pre-training set is distilled from a self-supervised teacher in five stages, each a kind of
`socratic.engine.run.Run` (resumable, with its run folder) started by `socratic dataset-distill STAGE CONFIG`:

    teacher   ssl.py + teacher.py        Barlow Twins (or SimCLR) encoder; its representation of every image
    experts   experts.py                 ConvNets trained by MSE to those representations; parameters per epoch
    select    selection.py               the examples of highest loss under the experts' epoch-1 parameters
    distill   matching.py + distill.py   trajectory matching of learnable images, targets and step size
    eval      probe.py + evaluation.py   pre-train a fresh ConvNet on a set, then L-BFGS linear probes

`config.py` holds the typed config and the stage folders, `pipeline.py` builds each stage, `pictures.py` draws
the distilled images and the matching loss. See docs/methods/mkdt.md.
"""
