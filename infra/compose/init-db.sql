-- Roles and schemas for docker-compose.yml. The postgres image runs this once, as the superuser,
-- in the `switchboard` database (POSTGRES_DB), when the data volume is empty.
--
-- One login role and one schema per service, the schema owned by its role: a service can reach
-- its own tables and nobody else's (architecture.md §2). scripts/devstack.py does the same for
-- the local stack. Passwords equal the role names: development only (the services refuse such a
-- password when SB_ENVIRONMENT=production).

\set ON_ERROR_STOP on

-- Nobody creates objects in public; every table lives in a service schema.
REVOKE ALL ON SCHEMA public FROM PUBLIC;

CREATE ROLE auth LOGIN PASSWORD 'auth';
CREATE ROLE messaging LOGIN PASSWORD 'messaging';
CREATE ROLE chat LOGIN PASSWORD 'chat';
CREATE ROLE media LOGIN PASSWORD 'media';
CREATE ROLE billing LOGIN PASSWORD 'billing';
CREATE ROLE provider_sync LOGIN PASSWORD 'provider_sync';

CREATE SCHEMA auth AUTHORIZATION auth;
CREATE SCHEMA messaging AUTHORIZATION messaging;
CREATE SCHEMA chat AUTHORIZATION chat;
CREATE SCHEMA media AUTHORIZATION media;
CREATE SCHEMA billing AUTHORIZATION billing;
CREATE SCHEMA provider_sync AUTHORIZATION provider_sync;

-- A new schema grants nothing to PUBLIC already; say so explicitly, as the local stack does.
REVOKE ALL ON SCHEMA auth, messaging, chat, media, billing, provider_sync FROM PUBLIC;

GRANT CONNECT ON DATABASE switchboard
    TO auth, messaging, chat, media, billing, provider_sync;
