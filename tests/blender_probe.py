"""Run inside Blender's Python (bpy) by tests/test_blender_import.py: import each file named on the
command line as Blender's default importers do, render GLBs with Workbench flat shading (what the
Solid view shows), and print what an artist would see as one JSON line prefixed ``PROBE``."""

import json
import math
import sys

import bpy


def _objects():
    out = []
    for ob in bpy.context.scene.objects:
        entry = {"name": ob.name, "type": ob.type, "parent": ob.parent.name if ob.parent else None,
                 "location": list(ob.matrix_world.translation)}
        if ob.type == "MESH":
            mesh = ob.data
            corners = [ob.matrix_world @ v.co for v in mesh.vertices]
            entry["world_min"] = [min(c[k] for c in corners) for k in range(3)]
            entry["world_max"] = [max(c[k] for c in corners) for k in range(3)]
            entry["materials"] = [m.name for m in mesh.materials if m]
            entry["custom_normals"] = bool(mesh.has_custom_normals)
            entry["props"] = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in ob.items()}
            material = mesh.materials[0] if mesh.materials else None
            if material is not None and material.node_tree is not None:
                bsdf = next((n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled"), None)
                if bsdf is not None:
                    entry["metallic"] = bsdf.inputs["Metallic"].default_value
                    entry["roughness"] = bsdf.inputs["Roughness"].default_value
                    entry["base_color"] = list(bsdf.inputs["Base Color"].default_value)[:3]
                    entry["base_color_linked"] = bool(bsdf.inputs["Base Color"].is_linked)
                    if bsdf.inputs["Base Color"].is_linked:
                        source = bsdf.inputs["Base Color"].links[0].from_node
                        entry["base_color_from"] = source.bl_idname
                        if source.bl_idname == "ShaderNodeTexImage" and source.image is not None:
                            entry["image_size"] = list(source.image.size)
                            entry["image_colorspace"] = source.image.colorspace_settings.name
            entry["uv_layers"] = [layer.name for layer in mesh.uv_layers]
        out.append(entry)
    return out


def _render(png: str) -> None:
    scene = bpy.context.scene
    camera = bpy.data.objects.new("probe_camera", bpy.data.cameras.new("probe_camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.location = (3.0, -3.5, 2.2)
    camera.rotation_euler = (math.radians(65), 0, math.radians(40))
    scene.render.resolution_x = scene.render.resolution_y = 320
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "MATERIAL"
    scene.view_settings.view_transform = "Standard"
    scene.render.filepath = png
    bpy.ops.render.render(write_still=True)


def main() -> None:
    args = sys.argv[sys.argv.index("--") + 1:]
    report = {"version": bpy.app.version_string, "files": {}}
    for path in args:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        suffix = path.rsplit(".", 1)[-1].lower()
        if suffix == "glb":
            bpy.ops.import_scene.gltf(filepath=path)
        else:
            getattr(bpy.ops.wm, f"{suffix}_import")(filepath=path)
        report["files"][path] = _objects()
        if suffix == "glb":
            _render(path + ".png")
    print("PROBE" + json.dumps(report, default=str))


main()
