"""The command line. Only this package imports click (DESIGN §2.1)."""
