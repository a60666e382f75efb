"""STAC access, pair selection inputs, raster reading and reprojection, the demo catalog."""
