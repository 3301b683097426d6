/**
 * Packaging: a prebuild in prebuilds/<platform>-<arch>/ is what node-gyp-build loads when
 * there is no local build, and the install step uses it instead of building from source; the
 * CUDA side library is loaded (or explained) at run time; and the tarball `npm pack` makes
 * (its prepack builds the release addon) installs from the npm cache, with and without
 * scripts, runs the CLI with only node on the PATH, loads through import and require, and
 * type-checks.
 */
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { packageRoot } from '../../src/binding/load.js';

const require = createRequire(import.meta.url);
const nodeGypBuild = require('node-gyp-build') as ((dir: string) => unknown) & { resolve(dir: string): string };

describe('prebuilds', () => {
  const built = process.env.ALIGNVAR_ADDON ? resolve(process.env.ALIGNVAR_ADDON) : nodeGypBuild.resolve(packageRoot);
  const dir = mkdtempSync(join(tmpdir(), 'alignvar-pkg-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const platformDir = join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
  mkdirSync(platformDir, { recursive: true });
  mkdirSync(join(dir, 'scripts'));
  copyFileSync(built, join(platformDir, 'alignvar.node'));
  copyFileSync(join(packageRoot, 'scripts', 'install.cjs'), join(dir, 'scripts', 'install.cjs'));
  // The build script must not run: make it fail loudly if it does.
  writeFileSync(join(dir, 'scripts', 'build-native.cjs'), "throw new Error('built from source');\n");
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'alignvar', version: '0.0.0' }));
  symlinkSync(join(packageRoot, 'node_modules'), join(dir, 'node_modules'));

  it('node-gyp-build loads the prebuild when there is no build/ folder', () => {
    expect(nodeGypBuild.resolve(dir)).toBe(join(platformDir, 'alignvar.node'));
    const addon = nodeGypBuild(dir) as { backendInfo(): { name: string }[] };
    expect(addon.backendInfo().map((b) => b.name)).toContain('cpu');
  });

  it('the install step uses the matching prebuild and builds nothing', () => {
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'install.cjs')], { encoding: 'utf8' });
    expect(r.stderr).not.toMatch(/built from source/);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`using ${join('prebuilds', `${process.platform}-${process.arch}`, 'alignvar.node')}`);
  });

  it('the install step builds from source when no prebuild matches', () => {
    rmSync(join(platformDir, 'alignvar.node'));
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'install.cjs')], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/built from source/);
  });
});

/** Runs a command; never throws (the assertions read status and output). */
function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }) {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { ...opts, encoding: 'utf8', timeout: 600_000, maxBuffer: 64 << 20 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, seconds: (Date.now() - t0) / 1000 };
}

describe('the CUDA side library', () => {
  const addonPath = nodeGypBuild.resolve(packageRoot);
  // In a child: the library is looked for once per process.
  const probe = (lib: string) => {
    const js = `const a = require(${JSON.stringify(addonPath)}); a.setCudaLibrary(${JSON.stringify(lib)});
      console.log(JSON.stringify(a.backendInfo().find((b) => b.name === 'cuda')));`;
    const r = run(process.execPath, ['-e', js], { cwd: packageRoot });
    expect(r.status, r.out).toBe(0);
    return JSON.parse(r.out) as { compiled: boolean; available: boolean; reason: string };
  };

  it('a missing library leaves CUDA unavailable with the paths tried', () => {
    const cuda = probe('/nonexistent/libav_cuda.so');
    expect(cuda.compiled).toBe(false);
    expect(cuda.reason).toMatch(/libav_cuda\.so could not be loaded \(\/nonexistent\/libav_cuda\.so: not found; /);
    expect(cuda.reason).toMatch(/install @alignvar\/linux-x64-cuda or build from source with AV_CUDA=ON/);
  });

  it('a shared library that is not the CUDA backend is refused with the reason', () => {
    const cuda = probe(addonPath);
    expect(cuda.compiled).toBe(false);
    expect(cuda.reason).toContain(`${addonPath}: not an alignvar CUDA library (no av_cuda_plugin_get)`);
  });

  // Built by `node scripts/release-cuda.cjs` (nvcc, minutes); ALIGNVAR_CUDA_LIBRARY names another.
  const lib = process.env.ALIGNVAR_CUDA_LIBRARY ?? join(packageRoot, 'build-cuda', 'Release', 'libav_cuda.so');
  const haveLib = existsSync(lib);
  if (!haveLib)
    console.log(`packaging: CUDA library checks skipped: ${lib} does not exist (node scripts/release-cuda.cjs)`);
  it.skipIf(!haveLib)('the built libav_cuda.so loads into the CPU addon and reports the machine', () => {
    const cuda = probe(lib);
    expect(cuda.compiled).toBe(true);
    const driver = ['/dev/nvidiactl', '/proc/driver/nvidia/version'].some((p) => existsSync(p));
    if (!driver) {
      expect(cuda.available).toBe(false);
      expect(cuda.reason).toMatch(/driver|no CUDA device/i);
    }
  });
});

describe('the packed package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'alignvar-pack-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let tgz = '';
  let files: string[] = [];
  const haveQueue = existsSync(join(packageRoot, 'src', 'queue', 'index.ts'));
  // PATH with node and sh only (npm runs scripts through sh): no compiler, cmake, python or make.
  const nodeOnly = join(dir, 'bin');
  mkdirSync(nodeOnly);
  symlinkSync(process.execPath, join(nodeOnly, 'node'));
  symlinkSync('/bin/sh', join(nodeOnly, 'sh'));
  const bare = { PATH: nodeOnly, HOME: process.env.HOME ?? dir, NO_COLOR: '1' };
  const npmCli = join(
    dirname(dirname(realpathSync(process.execPath))),
    'lib',
    'node_modules',
    'npm',
    'bin',
    'npm-cli.js',
  );
  const npm = (args: string[], cwd: string, env: NodeJS.ProcessEnv = bare) =>
    run(process.execPath, [npmCli, ...args], { cwd, env });

  beforeAll(() => {
    // prepack builds the release addon into prebuilds/ (incremental, in build-release/).
    const r = run('npm', ['pack', '--pack-destination', dir], { cwd: packageRoot });
    expect(r.status, r.out).toBe(0);
    tgz = join(
      dir,
      readdirSync(dir).find((f) => f.endsWith('.tgz'))!,
    );
    files = run('tar', ['-tzf', tgz], { cwd: dir })
      .out.split('\n')
      .filter((f) => f && !f.endsWith('/'))
      .map((f) => f.replace(/^package\//, ''));
    console.log(`packaging: ${basename(tgz)} ${(statSync(tgz).size / 1048576).toFixed(2)} MiB, ${files.length} files`);
  }, 900_000);

  it('ships what a user runs, with a LICENSE', () => {
    const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    for (const f of [
      'package.json',
      'README.md',
      'LICENSE',
      'dist/index.js',
      'dist/index.d.ts',
      ...Object.values(pkg.bin).map((b) => b.replace(/^\.\//, '')),
      `prebuilds/${process.platform}-${process.arch}/alignvar.napi.glibc.node`,
      'models/alignvar-default.safetensors',
      'scripts/install.cjs',
      'scripts/build-native.cjs',
      'CMakeLists.txt',
      'native/addon.cc',
      'cuda/backend-cuda.cu',
    ])
      expect(files, f).toContain(f);
    expect(readFileSync(join(packageRoot, 'LICENSE'), 'utf8')).toMatch(
      /^MIT License\n\nCopyright \(c\) \d{4} the alignvar authors\n/,
    );
  });

  it('ships no dev files, maps, test bindings or CUDA binaries', () => {
    const unwanted = files.filter(
      (f) =>
        /\.js\.map$|\.d\.ts\.map$|\.tsbuildinfo$|(^|\/)test-(ops|blas)\.(cc|h)$|\.so$|^(src|test|bench|training|docs|build|packages)\//.test(
          f,
        ) ||
        /^models\/(crops\/|.*\.json$|eval)/.test(f) ||
        (f.startsWith('scripts/') && !['scripts/install.cjs', 'scripts/build-native.cjs'].includes(f)) ||
        f === 'prebuilds/README.md',
    );
    expect(unwanted).toEqual([]);
  });

  it('every exports entry and its types are in the tarball', () => {
    const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as {
      exports: Record<string, string | { types: string; default: string }>;
    };
    expect(Object.keys(pkg.exports)).toEqual(expect.arrayContaining(['.', './queue']));
    for (const [entry, target] of Object.entries(pkg.exports)) {
      const paths = typeof target === 'string' ? [target] : [target.types, target.default];
      for (const p of paths) {
        const f = p.replace(/^\.\//, '');
        // Only the queue entry may be absent, and only while src/queue/index.ts is not written.
        if (entry === './queue' && !haveQueue) expect(files).not.toContain(f);
        else expect(files, `${entry}: ${f}`).toContain(f);
      }
    }
  });

  it('the prebuilt addon is a release build: no test exports, no CUDA code', () => {
    const prebuild = join(dir, 'extract');
    mkdirSync(prebuild);
    expect(run('tar', ['-xzf', tgz, '-C', prebuild], { cwd: dir }).status).toBe(0);
    const node = join(
      prebuild,
      'package',
      'prebuilds',
      `${process.platform}-${process.arch}`,
      'alignvar.napi.glibc.node',
    );
    const r = run(process.execPath, ['-e', `console.log(Object.keys(require(${JSON.stringify(node)})).join(','))`], {
      cwd: dir,
    });
    expect(r.status, r.out).toBe(0);
    expect(r.out.trim().split(',').sort()).toEqual(['Session', 'backendInfo', 'setCudaLibrary']);
    expect(readFileSync(node).includes('cudaGetDeviceCount')).toBe(false);
  });

  describe('installed into a fresh app, no compiler on the PATH', () => {
    const app = join(dir, 'app');
    const model = join(packageRoot, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');

    beforeAll(() => {
      mkdirSync(app);
      writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
      const typesNode = (require('@types/node/package.json') as { version: string }).version;
      const r = npm(
        ['install', tgz, `@types/node@${typesNode}`, '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'],
        app,
      );
      expect(r.status, r.out).toBe(0);
      console.log(`packaging: npm install --ignore-scripts --prefer-offline: ${r.seconds.toFixed(1)} s`);
    }, 600_000);

    it('`alignvar upscale` runs from the prebuild', async () => {
      const sharp = (await import('sharp')).default;
      await sharp({ create: { width: 20, height: 12, channels: 3, background: { r: 200, g: 80, b: 30 } } })
        .png()
        .toFile(join(app, 'in.png'));
      const r = run(
        join(app, 'node_modules', '.bin', 'alignvar'),
        ['upscale', 'in.png', '-o', 'out.png', '--model', model],
        {
          cwd: app,
          env: bare,
        },
      );
      expect(r.status, r.out).toBe(0);
      const meta = await sharp(join(app, 'out.png')).metadata();
      expect([meta.width, meta.height]).toEqual([80, 48]);
      expect(existsSync(join(app, 'node_modules', 'alignvar', 'build'))).toBe(false);
    });

    it('import and require both load it; CUDA is explained, not crashed', () => {
      const esm = run(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          "import { createUpscaler, backendInfo } from 'alignvar'; console.log(typeof createUpscaler, JSON.stringify(backendInfo()));",
        ],
        { cwd: app, env: bare },
      );
      expect(esm.status, esm.out).toBe(0);
      expect(esm.out).toMatch(/^function /);
      const cuda = (JSON.parse(esm.out.slice('function '.length)) as { name: string; reason: string }[]).find(
        (b) => b.name === 'cuda',
      )!;
      expect(cuda.reason).toMatch(/libav_cuda\.so could not be loaded/);
      const cjs = run(
        process.execPath,
        [
          '-e',
          "const a = require('alignvar'); console.log(typeof a.createUpscaler, require('alignvar/package.json').name)",
        ],
        { cwd: app, env: bare },
      );
      expect(cjs.status, cjs.out).toBe(0);
      expect(cjs.out).toMatch(/^function alignvar$/m);
    });

    it('a TypeScript consumer type-checks against the typings (and a wrong option fails)', () => {
      writeFileSync(
        join(app, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            module: 'nodenext',
            moduleResolution: 'nodenext',
            target: 'es2022',
            strict: true,
            noEmit: true,
            skipLibCheck: false,
            types: ['node'],
          },
        }),
      );
      writeFileSync(
        join(app, 'good.mts'),
        [
          "import { backendInfo, createUpscaler, type BackendInfo, type RawImage, type UpscaleOptions } from 'alignvar';",
          haveQueue ? "import * as queue from 'alignvar/queue';\nvoid queue;" : '',
          "const up = await createUpscaler({ device: 'cpu' });",
          "const options: UpscaleOptions = { format: 'png', seed: 1 };",
          "const png: Buffer = await up.upscale('in.png', { format: 'png' });",
          "const any: Buffer | RawImage = await up.upscale('in.png', options);",
          'console.log(any);',
          'const infos: BackendInfo[] = backendInfo();',
          'console.log(png.length, infos.length);',
          'await up.dispose();',
        ].join('\n'),
      );
      writeFileSync(join(app, 'good.cts'), "import alignvar = require('alignvar');\nvoid alignvar.createUpscaler;\n");
      const tsc = join(packageRoot, 'node_modules', 'typescript', 'bin', 'tsc');
      const ok = run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: app, env: bare });
      // skipLibCheck is off so our .d.ts files are checked (and need @types/node). ioredis's own
      // typings (under alignvar/queue, via bullmq) import the untyped 'redis-errors': not ours.
      const errors = ok.out.split('\n').filter((l) => / error TS\d+/.test(l) && !l.startsWith('node_modules/ioredis/'));
      expect(errors).toEqual([]);
      if (!haveQueue) expect(ok.status, ok.out).toBe(0);
      // With skipLibCheck on (TypeScript's own `tsc --init` default), the same consumer, the
      // queue entry included, type-checks with no error at all.
      writeFileSync(
        join(app, 'tsconfig.skip.json'),
        JSON.stringify({ extends: './tsconfig.json', compilerOptions: { skipLibCheck: true } }),
      );
      const skip = run(process.execPath, [tsc, '-p', 'tsconfig.skip.json'], { cwd: app, env: bare });
      expect(skip.status, skip.out).toBe(0);
      writeFileSync(
        join(app, 'bad.mts'),
        "import { createUpscaler } from 'alignvar';\nawait createUpscaler({ device: 'tpu' });\n",
      );
      const bad = run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: app, env: bare });
      expect(bad.status).not.toBe(0);
      expect(bad.out).toMatch(/bad\.mts\(2,\d+\): error TS2322: Type '"tpu"'/);
    });

    it('installing with scripts uses the prebuild and compiles nothing', () => {
      const app2 = join(dir, 'app2');
      mkdirSync(app2);
      writeFileSync(join(app2, 'package.json'), JSON.stringify({ name: 'consumer2', version: '1.0.0', private: true }));
      const r = npm(['install', tgz, '--prefer-offline', '--foreground-scripts', '--no-audit', '--no-fund'], app2);
      console.log(`packaging: npm install --prefer-offline (scripts on): ${r.seconds.toFixed(1)} s`);
      expect(r.status, r.out).toBe(0);
      expect(r.out).toContain(`alignvar: using prebuilds/${process.platform}-${process.arch}/alignvar.napi.glibc.node`);
      expect(existsSync(join(app2, 'node_modules', 'alignvar', 'build'))).toBe(false);
    });

    // A platform with no matching prebuild: the install step compiles the shipped sources (a
    // release build, 1-2 minutes on 2 cores). The copy sits in the app's node_modules so that it
    // finds cmake-js and node-addon-api there, as an installed package does.
    it('with no prebuild, the install step builds the CPU addon from the shipped sources: progress, CUDA only with a driver, no intermediates left', () => {
      const pkg = join(app, 'node_modules', 'alignvar-from-source');
      cpSync(join(app, 'node_modules', 'alignvar'), pkg, { recursive: true });
      rmSync(join(pkg, 'prebuilds'), { recursive: true, force: true });
      const r = run(process.execPath, [join(pkg, 'scripts', 'install.cjs')], { cwd: pkg, env: process.env });
      console.log(`packaging: build from source in ${r.seconds.toFixed(0)} s`);
      expect(r.status, r.out).toBe(0);
      expect(r.out).toContain(
        'alignvar: building the native addon from source (release build, CUDA only if an NVIDIA driver is found)',
      );
      expect(r.out).toMatch(/\[\s*\d+%\] Building CXX object|\[\d+\/\d+\] Building CXX object/); // the compiler's progress
      expect(r.out).toMatch(/alignvar: native build done in \d+ s/);
      const driver =
        existsSync('/usr/lib/x86_64-linux-gnu/libcuda.so.1') ||
        run('sh', ['-c', 'command -v nvidia-smi'], { cwd: pkg }).status === 0;
      const nvcc = run('sh', ['-c', 'command -v nvcc'], { cwd: pkg }).status === 0;
      if (nvcc && !driver) expect(r.out).toContain('nvcc found but no NVIDIA driver: building the CPU backend only');
      const release = join(pkg, 'build', 'Release');
      expect(readdirSync(join(pkg, 'build'))).toEqual(['Release']);
      const kept = readdirSync(release).sort();
      expect(kept).toEqual(driver && nvcc ? ['alignvar.node', 'libav_cuda.so'] : ['alignvar.node']);
      // The built addon loads, without the test exports.
      const keys = run(
        process.execPath,
        ['-e', `console.log(Object.keys(require(${JSON.stringify(join(release, 'alignvar.node'))})).join(','))`],
        {
          cwd: pkg,
        },
      );
      expect(keys.status, keys.out).toBe(0);
      expect(keys.out.trim().split(',').sort()).toEqual(['Session', 'backendInfo', 'setCudaLibrary']);
    }, 900_000);
  });
});
