"""Placeholder: HTML pages (see docs/contracts.md)."""

from fastapi import APIRouter

router = APIRouter()
