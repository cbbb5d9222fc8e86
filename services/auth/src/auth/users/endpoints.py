from typing import Annotated

from common.api import Envelope, ok
from common.auth import CurrentPrincipal
from common.db.session import SessionDep
from fastapi import APIRouter, Query

from auth.deps import ClientIpDep, LimiterDep, SettingsDep
from auth.sessions.schemas import TokenRead, UserRead
from auth.users import service
from auth.users.schemas import LoginRequest, ProfileUpdate, PublicUser, RegisterRequest

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.post("/users/register", status_code=201, response_model=Envelope[TokenRead])
@router.post("/auth/register", status_code=201, response_model=Envelope[TokenRead])
async def register(body: RegisterRequest, session: SessionDep, settings: SettingsDep, limiter: LimiterDep, ip: ClientIpDep):
    """Create an account; with `tenantName` it also creates that tenant with you as OWNER."""
    return ok(await service.register(session, settings, limiter, ip, body))


@router.post("/users/login", response_model=Envelope[TokenRead])
@router.post("/auth/login", response_model=Envelope[TokenRead])
async def login(body: LoginRequest, session: SessionDep, settings: SettingsDep, limiter: LimiterDep, ip: ClientIpDep):
    """Log in with email and password; repeated failures are limited per account and per IP."""
    return ok(await service.login(session, settings, limiter, ip, body))


@router.get("/users/me", response_model=Envelope[UserRead])
@router.get("/auth/me", response_model=Envelope[UserRead])
async def get_me(principal: CurrentPrincipal, session: SessionDep):
    """The caller's profile, tenant and role."""
    return ok(await service.me(session, principal))


@router.put("/users/me", response_model=Envelope[UserRead])
@router.put("/auth/profile", response_model=Envelope[UserRead])
async def update_profile(body: ProfileUpdate, principal: CurrentPrincipal, session: SessionDep):
    """Change name, about or avatar (a media id); nothing else can be set here."""
    return ok(await service.update_profile(session, principal, body))


@router.get("/users/search", response_model=Envelope[list[PublicUser]])
async def search_users(
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    q: Annotated[str, Query(min_length=1, max_length=100)],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
):
    """A full phone number finds that user; a name finds members of your own tenant."""
    return ok(await service.search(session, settings, limiter, principal, q, limit))
