"""Participant JSON API and pages (being written)."""

from fastapi import APIRouter

router = APIRouter()
