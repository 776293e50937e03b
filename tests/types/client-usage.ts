// A deploy script using require('nodeguard-monitor/client'), type-checked by tests/types.test.js
// (`tsc --noEmit -p tests/types`) against client.d.ts. Never run.

import { connect, type EventRecord } from 'nodeguard-monitor/client';

export async function deploy(): Promise<number> {
  const ng = await connect({ home: '/srv/nodeguard' });
  const apps = await ng.start({ script: 'server.js', name: 'api', instances: 2, env: { PORT: 3000 } });
  const pids: Array<number | null> = apps.map((app) => app.pid);
  await ng.restart('api', { updateEnv: true });
  const { notes } = await ng.reload(0);
  const described = await ng.describe('api');
  ng.on('event', (event: EventRecord) => {
    const frames: string[] = event.stack ?? [];
    void frames;
  }).on('disconnect', () => ng.close());
  // @ts-expect-error a target is a name or an id
  await ng.stop({ name: 'api' });
  // @ts-expect-error start needs a script
  await ng.start({ name: 'api' });
  await ng.delete('all');
  return pids.length + notes.length + described.length + (await ng.list()).length;
}
