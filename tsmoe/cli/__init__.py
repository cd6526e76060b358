"""The `tsmoe` command line."""
