// A real, third-party OpenID provider (oidc-provider 8.x) for the interoperability tests in
// tests/e2e_oidc.rs, driven by tests/support/oidc.rs.
//
//   node tests/oidc/server.mjs [PORT]
//
// Listens on 127.0.0.1 (port 0, the default, picks a free one) with the issuer
// http://127.0.0.1:<port>, prints exactly one line `READY <port>` to stdout once it accepts
// connections, and exits when its stdin closes (the test process went away) or on SIGTERM/SIGINT.
// Everything else it says goes to stderr.
//
// The provider is configured as an operator would configure it for Jira; only the /test/ routes
// are test scaffolding: they mint tokens through the provider's own models, because driving a
// browser login is not what these tests are about.
//
//   POST /test/opaque?account=alice  -> {"access_token": <opaque token>, ...}
//        an opaque access token bound to the account, the client `atlassian-cli` and a grant,
//        scope "openid email profile": accepted by userinfo, introspection and revocation.
//   POST /test/jwt?account=alice     -> {"access_token": <JWT access token>, ...}
//        a JWT access token (RFC 9068, typ at+jwt, RS256 with a key of the provider's JWKS)
//        for the resource urn:atlassian:jira, bound to the account and the client.
//   GET  /test/info                  -> the clients, resource and accounts (for the harness).
//   GET  /test/requests              -> {"<path>": <count>, ...}: requests each path of the
//        provider received (the /test/ routes not counted), to see what the filter asked.
//
// Revocation uses the real endpoint: POST /token/revocation with client_secret_basic of the
// client the token was issued to (`atlassian-cli`).

import { generateKeyPairSync } from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info, which writes to stdout: stdout carries
// only the READY line, so send every other message to stderr.
console.log = console.error; // eslint-disable-line no-console
console.info = console.error; // eslint-disable-line no-console

const HOST = '127.0.0.1';

/** The resource server (RFC 8707) whose access tokens are JWTs: the Jira behind the filter. */
const RESOURCE = 'urn:atlassian:jira';
const RESOURCE_SCOPE = 'jira:read jira:write';

/** The client tokens are issued to (a CLI or integration calling Jira's REST API). */
const APP_CLIENT = { id: 'atlassian-cli', secret: 'cli-secret' };
/** The client the filter authenticates as at the introspection endpoint. */
const FILTER_CLIENT = { id: 'jira-filter', secret: 'filter-secret' };

/** Scope of the opaque tokens: what the userinfo endpoint needs, and the claims it releases. */
const OPAQUE_SCOPE = 'openid email profile';

const TOKEN_TTL_SECONDS = 600;

/** Test accounts by name; the provider knows them by `sub` (its accountId). */
const ACCOUNTS = {
  alice: {
    sub: 'alice-sub',
    preferred_username: 'alice',
    name: 'Alice Example',
    email: 'alice@example.com',
    email_verified: true,
  },
  bob: {
    sub: 'bob-sub',
    preferred_username: 'bob',
    name: 'Bob Example',
    email: 'bob@example.com',
    email_verified: true,
  },
};

function accountBySub(sub) {
  return Object.values(ACCOUNTS).find((account) => account.sub === sub);
}

/** A fresh RSA signing key each run, published in the JWKS with a `kid`. */
function signingJwks() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `rsa-${Date.now().toString(36)}`, use: 'sig', alg: 'RS256' }] };
}

function configuration() {
  return {
    jwks: signingJwks(),
    clients: [
      {
        client_id: APP_CLIENT.id,
        client_secret: APP_CLIENT.secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
      },
      {
        // A resource server: it only introspects, it never obtains tokens.
        client_id: FILTER_CLIENT.id,
        client_secret: FILTER_CLIENT.secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      },
    ],
    async findAccount(ctx, sub) {
      const account = accountBySub(sub);
      if (!account) {
        return undefined;
      }
      return {
        accountId: sub,
        async claims() {
          return { ...account };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      introspection: {
        enabled: true,
        // The filter may introspect any token; a client may introspect its own.
        async allowedPolicy(ctx, client, token) {
          return client.clientId === FILTER_CLIENT.id || client.clientId === token.clientId;
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource() {
          return undefined;
        },
        async useGrantedResource() {
          return false;
        },
        async getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== RESOURCE) {
            throw new Provider.errors.InvalidTarget();
          }
          return resourceServerInfo();
        },
      },
    },
    ttl: {
      AccessToken: TOKEN_TTL_SECONDS,
      AuthorizationCode: 60,
      ClientCredentials: TOKEN_TTL_SECONDS,
      Grant: 3600,
      IdToken: TOKEN_TTL_SECONDS,
      Interaction: 600,
      RefreshToken: 3600,
      Session: 3600,
    },
    cookies: { keys: ['atlassian-rest-auth-oidc-interop-test-only'] },
    pkce: { required: () => false },
  };
}

function resourceServerInfo() {
  return {
    scope: RESOURCE_SCOPE,
    audience: RESOURCE,
    accessTokenTTL: TOKEN_TTL_SECONDS,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

/** A grant of `account` to the app client, as a consent would record it. */
async function saveGrant(provider, account) {
  const grant = new provider.Grant({ accountId: account.sub, clientId: APP_CLIENT.id });
  grant.addOIDCScope(OPAQUE_SCOPE);
  grant.addResourceScope(RESOURCE, RESOURCE_SCOPE);
  return grant.save();
}

async function mintOpaque(provider, account) {
  const client = await provider.Client.find(APP_CLIENT.id);
  const token = new provider.AccessToken({
    accountId: account.sub,
    client,
    grantId: await saveGrant(provider, account),
    gty: 'authorization_code',
    scope: OPAQUE_SCOPE,
  });
  return { access_token: await token.save(), token_type: 'Bearer', expires_in: token.expiration, scope: token.scope };
}

async function mintJwt(provider, account) {
  const client = await provider.Client.find(APP_CLIENT.id);
  const token = new provider.AccessToken({
    accountId: account.sub,
    client,
    grantId: await saveGrant(provider, account),
    gty: 'authorization_code',
    scope: RESOURCE_SCOPE,
    resourceServer: new provider.ResourceServer(RESOURCE, resourceServerInfo()),
  });
  return { access_token: await token.save(), token_type: 'Bearer', expires_in: token.expiration, scope: token.scope };
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}

/** Requests per path to the provider itself, since start. */
const requestCounts = new Map();

/** The /test/ routes; `false` when the request is for the provider itself. */
async function testRoute(provider, req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (!url.pathname.startsWith('/test/')) {
    requestCounts.set(url.pathname, (requestCounts.get(url.pathname) ?? 0) + 1);
    return false;
  }
  if (url.pathname === '/test/requests' && req.method === 'GET') {
    sendJson(res, 200, Object.fromEntries(requestCounts));
    return true;
  }
  if (url.pathname === '/test/info' && req.method === 'GET') {
    sendJson(res, 200, {
      issuer: provider.issuer,
      resource: RESOURCE,
      resource_scope: RESOURCE_SCOPE,
      app_client: { client_id: APP_CLIENT.id, client_secret: APP_CLIENT.secret },
      filter_client: { client_id: FILTER_CLIENT.id, client_secret: FILTER_CLIENT.secret },
      accounts: ACCOUNTS,
    });
    return true;
  }
  const mint = { '/test/opaque': mintOpaque, '/test/jwt': mintJwt }[url.pathname];
  if (!mint || req.method !== 'POST') {
    sendJson(res, 404, { error: 'not_found', error_description: `no test route ${req.method} ${url.pathname}` });
    return true;
  }
  const name = url.searchParams.get('account') ?? '';
  const account = Object.hasOwn(ACCOUNTS, name) ? ACCOUNTS[name] : undefined;
  if (!account) {
    sendJson(res, 400, { error: 'invalid_request', error_description: `unknown account ${JSON.stringify(name)}` });
    return true;
  }
  sendJson(res, 200, await mint(provider, account));
  return true;
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

async function main() {
  const requested = process.argv[2] === undefined ? 0 : Number(process.argv[2]);
  if (!Number.isInteger(requested) || requested < 0 || requested > 65535) {
    throw new Error(`usage: node server.mjs [PORT] (got ${JSON.stringify(process.argv[2])})`);
  }

  // The issuer names the port, so bind first, then build the provider.
  const server = http.createServer();
  const port = await listen(server, requested);
  const provider = new Provider(`http://${HOST}:${port}`, configuration());
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  const handle = provider.callback();
  server.on('request', (req, res) => {
    testRoute(provider, req, res)
      .then((handled) => {
        if (!handled) {
          handle(req, res);
        }
      })
      .catch((err) => {
        console.error('test route failed:', err);
        if (!res.headersSent) {
          sendJson(res, 500, { error: 'server_error', error_description: String(err.message) });
        } else {
          res.destroy();
        }
      });
  });

  let stopping = false;
  const stop = (why) => {
    if (stopping) {
      return;
    }
    stopping = true;
    console.error(`oidc test provider on port ${port} stopping: ${why}`);
    // All state is in memory and disposable: nothing to flush, so stop at once.
    server.closeAllConnections();
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.resume();

  process.stdout.write(`READY ${port}\n`);
}

main().catch((err) => {
  console.error('oidc test provider failed to start:', err);
  process.exit(1);
});
