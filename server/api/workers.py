"""Placeholder router: filled in by its owner (see docs/contracts.md)."""

from fastapi import APIRouter

router = APIRouter()
