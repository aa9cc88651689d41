"""HW5: semantic segmentation of skin lesions (PH2) with SegNet, UNet and UNet2 and several losses."""
