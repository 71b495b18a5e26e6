// oidc-provider ships JavaScript without type declarations; the tests use a small part of it.
declare module 'oidc-provider' {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const Provider: any;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type Provider = any;
  export default Provider;
}
