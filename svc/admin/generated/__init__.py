"""Code generated from proto/ by `make proto` (svc/admin/codegen.py). Do not edit.

Every file below this directory is replaced on each run; change the `.proto` files instead.
"""
