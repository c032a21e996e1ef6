"""Learned policies (behaviour cloning) for dexfly tasks."""
