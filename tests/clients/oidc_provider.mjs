// A real OpenID Connect provider on 127.0.0.1 for the dashboard's single sign-on tests: node's
// oidc-provider (installed by .ci/run) with its development login and consent pages. Any login name is
// accepted; the account's email is that name, verified, so a test logs in as whoever it types.
// Usage: OIDC_MODULE=…/node_modules/oidc-provider/lib/index.js node oidc_provider.mjs PORT REDIRECT_URI SECRET
const { default: Provider } = await import(process.env.OIDC_MODULE);

const [port, redirect, secret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "hubproxy",
      client_secret: secret,
      redirect_uris: [redirect],
      post_logout_redirect_uris: [redirect.replace(/\/login\/oidc\/callback$/, "/login")],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: { email: ["email", "email_verified"], openid: ["sub"] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: id, email_verified: true }; } };
  },
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`oidc-provider on ${issuer}`));
