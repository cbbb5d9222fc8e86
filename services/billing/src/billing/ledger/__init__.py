"""The double-entry ledger: postings, holds, captures, releases, history."""
