// A small program against confab.d.ts: `npm run check` type-checks it with --strict, and the
// `@ts-expect-error` lines make the check fail if the declarations grow too loose.

import { Confab, ConfabError, ClientEvents, type Call, type RemoteTrack } from '@confab/client';

async function main(token: string, video: HTMLVideoElement): Promise<void> {
  const client = new Confab({ baseUrl: 'http://127.0.0.1:8080', token });
  client.on('connection', ({ state, attempt }) => console.log(state, attempt ?? 0));
  client.on('call:incoming', async ({ call_id, caller, media }) => {
    console.log(`${caller.name} calls (${media})`);
    const { call, ice_servers } = await client.accept(call_id);
    console.log(call.participants.length, ice_servers.map((s) => s.urls.join(',')));
  });
  client.on(ClientEvents.MEDIA_REMOTE, ({ tracks }) => {
    const camera: RemoteTrack | undefined = tracks.find((t) => t.source === 'camera');
    if (camera) video.srcObject = new MediaStream([camera.track]);
  });
  client.on('call', ({ call }) => {
    const current: Call | null = call;
    console.log(current?.status);
  });
  client.on('call:data', ({ from, payload }) => console.log(from, JSON.stringify(payload)));
  client.on('call:ended', ({ status, duration_s }) => console.log(status, duration_s.toFixed(0)));
  client.on('error', (err) => console.warn(err.code, err.message));
  const off = client.on('*', (type, data) => console.debug(type, data));

  await client.connect();
  const { call, online } = await client.initiate({ invitees: ['bob'], media: 'video' });
  console.log(call.id, online);
  await client.setMedia({ audioMuted: true });
  await client.setQuality('bob', 'camera', 'low');
  await client.sendData({ kind: 'reaction', emoji: '👍' });
  await client.sendData('hello bob', ['bob']);
  const history = await client.history({ limit: 10, direction: 'outgoing' });
  console.log(history.next_cursor, history.calls[0]?.direction);
  try {
    await client.leave();
  } catch (err) {
    if (err instanceof ConfabError) console.warn(err.code);
  }
  off();
  client.close();

  // Wrong uses that must not type-check:
  // @ts-expect-error an event the client never emits
  client.on('call:inconming', () => {});
  // @ts-expect-error `call:data` carries `from`, not `user_id`
  client.on('call:data', ({ user_id }) => console.log(user_id));
  // @ts-expect-error a quality the contract does not have
  await client.subscribe('bob', 'camera', 'ultra');
  // @ts-expect-error a function is no JSON payload
  await client.sendData(() => 1);
  // @ts-expect-error a token is required
  new Confab({ baseUrl: 'http://127.0.0.1:8080' });
}

main('token', document.createElement('video')).catch(console.error);
