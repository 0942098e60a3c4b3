# PASCAL-VOC 2012 validation (1449 images) under the paper's protocol, as the
# authors' `pascalvoc` loader with base_size=512, crop_size=(473, 473) and
# transform=ToTensor() (their tools/infer.py):
# - images decoded by PIL, no EXIF rotation (Image.open(...).convert('RGB'));
# - short side resized to 473 (PIL bilinear; labels PIL nearest), the long
#   side to int(long * 473 / short), then the centred 473x473 crop;
# - the boundary label 255 counted as background (0): nothing is ignored;
# - [0, 1] inputs (the model's data preprocessor: mean 0, std 255);
# - one forward pass on the crop (whole inference), scored on the crop.
# The configs' metrics (and --eval sea) score the 473x473 crop against its
# cropped label, as the authors do.
_base_ = ['./_paper-protocol.py']
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
crop_size = 473
test_pipeline = [
    dict(
        type='LoadImageFromFile',
        imdecode_backend='pillow',
        color_type='color_ignore_orientation'),
    dict(type='LoadAnnotations'),
    dict(type='ShortSideResizeCenterCrop', size=crop_size),
    dict(type='RemapLabels', mapping={255: 0}),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
val_dataloader = test_dataloader
