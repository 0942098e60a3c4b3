# ADE20K validation (2000 images) under the paper's protocol, as the authors'
# ADE20K loader with base_size=520, crop_size=(512, 512) and
# transform=ToTensor() (their tools/infer.py), 151 classes:
# - images decoded by PIL, no EXIF rotation (Image.open(...).convert('RGB'));
# - short side resized to 512 (PIL bilinear; labels PIL nearest), the long
#   side to int(long * 512 / short), then the centred 512x512 crop;
# - label 0 ("other") kept as a class of its own (no reduce_zero_label), so
#   class ids are 0 = other, 1..150 = MMSeg's ADE20K classes;
# - [0, 1] inputs (the model's data preprocessor: mean 0, std 255);
# - one forward pass on the crop (whole inference), scored on the crop.
_base_ = ['./_paper-protocol.py']
dataset_type = 'ADE20KWithOtherDataset'
data_root = 'data/ade/ADEChallengeData2016'
crop_size = 512
test_pipeline = [
    dict(
        type='LoadImageFromFile',
        imdecode_backend='pillow',
        color_type='color_ignore_orientation'),
    # labels as stored: the dataset's reduce_zero_label is False
    dict(type='LoadAnnotations'),
    dict(type='ShortSideResizeCenterCrop', size=crop_size),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
val_dataloader = test_dataloader
