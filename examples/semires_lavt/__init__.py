"""samrefine worked example: SemiRES on LAVT (referring expression segmentation)."""
