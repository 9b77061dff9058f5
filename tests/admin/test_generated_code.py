"""The checked-in generated code matches proto/ (CI never regenerates it)."""

from __future__ import annotations

from svc.admin import codegen


def test_generated_code_is_up_to_date_with_the_protos() -> None:
    stale = codegen.stale_files()
    assert not stale, "run `make proto` and commit svc/admin/generated/: " + "; ".join(stale)
