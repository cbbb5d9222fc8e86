from common.db.session import SessionDep
from fastapi import APIRouter

from auth.keys import service

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json")
async def get_jwks(session: SessionDep):
    """Public keys that verify access tokens (JWKS, RFC 7517)."""
    return await service.jwks(session)
