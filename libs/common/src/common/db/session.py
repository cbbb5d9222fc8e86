"""The request-scoped session: commits when the endpoint succeeds, rolls back when it raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from common.errors import AppError


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    factory = request.app.state.session_factory
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except AppError as exc:
            if exc.commit:
                await session.commit()
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise


# scope="function": the session commits (or fails) before the response is sent, so a client
# never gets a success for work that did not commit. (FastAPI's default for yield dependencies
# now runs their exit after the response.)
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
