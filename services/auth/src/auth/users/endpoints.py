from common.api import Envelope, ok
from common.db.session import SessionDep
from fastapi import APIRouter, Request

from auth.users import service
from auth.users.schemas import LoginRequest, RegisterRequest, TokenRead

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.post("/users/register", status_code=201, response_model=Envelope[TokenRead])
@router.post("/auth/register", status_code=201, response_model=Envelope[TokenRead])
async def register(body: RegisterRequest, session: SessionDep, request: Request):
    """Create an account; with `tenantName` it also creates that tenant with you as OWNER."""
    return ok(await service.register(session, request.app.state.settings, body))


@router.post("/users/login", response_model=Envelope[TokenRead])
@router.post("/auth/login", response_model=Envelope[TokenRead])
async def login(body: LoginRequest, session: SessionDep, request: Request):
    """Log in with email and password; answers an access token."""
    return ok(await service.login(session, request.app.state.settings, body))
