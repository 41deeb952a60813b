"""samrefine worked example: FixMatch-style semi-supervised semantic segmentation."""
